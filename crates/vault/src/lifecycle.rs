//! Decoding identity-provider lifecycle webhooks into [`LifecycleEvent`]s.
//!
//! Three payload formats, one per kind of identity provider:
//!
//! - **Auth0** log streams ([`decode_auth0`]): a JSON array of log entries, one entry, or JSON
//!   lines, each `{"log_id", "data": {"type", "user_id", "date"}}`. What each log event code does
//!   is the data in [`AUTH0_EVENT_CODES`], the one place to remap a code.
//! - **Clerk** ([`decode_clerk`]): one Svix message `{"type", "data", "timestamp"}` whose id is
//!   the (verified) `svix-id` header.
//! - **Okta** event hooks ([`decode_okta`], module [`okta`]): `{"data": {"events": [...]}}`, each
//!   a System Log event with `uuid`, `published`, `eventType` and `target`s.
//! - **Native** ([`decode_native`]), for Keycloak and any other OpenID Connect provider:
//!   `{"events": [{"id", "type", "subject", "group"?, "occurred_at"}]}` with RFC 3339 times.
//!
//! Decoding is pure: no I/O and no clock. It runs only on a body whose signature was already
//! verified. Event types Custody does not act on decode to [`DecodedEvent::Ignored`]; a body that
//! is not of the expected shape, or a known event missing what it needs, is a
//! [`MalformedPayload`] and nothing in the delivery is applied.

use crate::ports::{LifecycleChange, LifecycleEvent};
use custody_identity::claims::{MAX_MEMBERSHIP_LEN, MAX_SUBJECT_LEN};
use custody_identity::idp::IdpKind;
use custody_identity::UnixTime;
use serde_json::Value;

pub mod okta;
pub use okta::decode_okta;

/// The longest event id accepted, in bytes.
pub const MAX_EVENT_ID_LEN: usize = 255;

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
    fn change(self) -> LifecycleChange {
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

/// The payload format an identity provider of `kind` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// Auth0 log streams.
    Auth0LogStream,
    /// Clerk's Svix-delivered events.
    Clerk,
    /// Okta event hooks.
    OktaEventHook,
    /// Custody's native format.
    Native,
}

impl WebhookFormat {
    /// The format an identity provider of `kind` delivers.
    pub fn for_kind(kind: IdpKind) -> WebhookFormat {
        match kind {
            IdpKind::Auth0 => WebhookFormat::Auth0LogStream,
            IdpKind::Clerk => WebhookFormat::Clerk,
            IdpKind::Okta => WebhookFormat::OktaEventHook,
            IdpKind::Keycloak | IdpKind::CustomOidc => WebhookFormat::Native,
        }
    }

    /// A short name for audit rows and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Auth0LogStream => "auth0",
            WebhookFormat::Clerk => "clerk",
            WebhookFormat::OktaEventHook => "okta",
            WebhookFormat::Native => "native",
        }
    }
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

/// The authenticated Svix headers of a Clerk delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvixMessage<'a> {
    /// `svix-id`: the message id, which is the event id.
    pub id: &'a str,
    /// `svix-timestamp`: when Svix sent it; used when the event carries no `timestamp`.
    pub timestamp: UnixTime,
}

/// Decodes a delivery in `format`. `svix` is required for [`WebhookFormat::Clerk`].
pub fn decode(
    format: WebhookFormat,
    body: &[u8],
    svix: Option<&SvixMessage<'_>>,
) -> Result<Vec<DecodedEvent>, MalformedPayload> {
    match format {
        WebhookFormat::Auth0LogStream => decode_auth0(body),
        WebhookFormat::Native => decode_native(body),
        WebhookFormat::OktaEventHook => decode_okta(body),
        WebhookFormat::Clerk => match svix {
            Some(message) => decode_clerk(body, message),
            None => Err(MalformedPayload("the svix-id and svix-timestamp headers are required".into())),
        },
    }
}

// ----- helpers -----

type Field<T> = Result<T, String>;

fn object<'a>(value: &'a Value, what: &str) -> Field<&'a serde_json::Map<String, Value>> {
    value.as_object().ok_or_else(|| format!("{what}: expected an object"))
}

/// The value at `path` below `value`, if present and not null.
fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key)).filter(|v| !v.is_null())
}

/// The non-empty string at `path`, at most `max` bytes.
fn required_str<'a>(value: &'a Value, path: &[&str], max: usize) -> Field<&'a str> {
    let name = path.join(".");
    match at(value, path) {
        None => Err(format!("{name}: required")),
        Some(Value::String(s)) if s.is_empty() => Err(format!("{name}: must not be empty")),
        Some(Value::String(s)) if s.len() > max => Err(format!("{name}: longer than {max} bytes")),
        // A NUL never names a user, group or event; PostgreSQL cannot even store one.
        Some(Value::String(s)) if s.contains('\0') => Err(format!("{name}: must not contain NUL characters")),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("{name}: expected a string")),
    }
}

fn subject(value: &Value, path: &[&str]) -> Field<String> {
    required_str(value, path, MAX_SUBJECT_LEN).map(str::to_owned)
}

fn event_id(value: &Value, path: &[&str]) -> Field<String> {
    required_str(value, path, MAX_EVENT_ID_LEN).map(str::to_owned)
}

/// An RFC 3339 time at `path`, to whole seconds.
fn rfc3339_at(value: &Value, path: &[&str]) -> Field<UnixTime> {
    let text = required_str(value, path, 64)?;
    parse_rfc3339(text).ok_or_else(|| format!("{}: expected an RFC 3339 time", path.join(".")))
}

/// Parses an RFC 3339 time (`2026-11-22T10:00:00Z`, fractions and offsets allowed) to whole
/// seconds since the epoch.
pub fn parse_rfc3339(text: &str) -> Option<UnixTime> {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(text, &Rfc3339).ok().map(|t| UnixTime(t.unix_timestamp()))
}

/// The JSON values of a body that is an array, one value, or several values separated by
/// whitespace (JSON lines).
fn json_values(body: &[u8]) -> Result<Vec<Value>, MalformedPayload> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => Err(MalformedPayload("the body is empty".into())),
        Some(b'[') => serde_json::from_slice::<Vec<Value>>(body)
            .map_err(|e| MalformedPayload(format!("not a JSON array: {}", json_error(&e)))),
        Some(_) => {
            let values = serde_json::Deserializer::from_slice(body)
                .into_iter::<Value>()
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| MalformedPayload(format!("not JSON: {}", json_error(&e))))?;
            Ok(values)
        }
    }
}

/// serde_json's description of an error: its category and position, never the input.
fn json_error(e: &serde_json::Error) -> String {
    let category = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected value",
        serde_json::error::Category::Eof => "unexpected end",
    };
    format!("{category} at line {} column {}", e.line(), e.column())
}

fn json_document(body: &[u8]) -> Result<Value, MalformedPayload> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(MalformedPayload("the body is empty".into()));
    }
    serde_json::from_slice(body).map_err(|e| MalformedPayload(format!("not JSON: {}", json_error(&e))))
}

// ----- Auth0 -----

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

// ----- Clerk -----

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

// ----- native -----

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    fn acts(decoded: &[DecodedEvent]) -> Vec<LifecycleEvent> {
        decoded
            .iter()
            .flat_map(|d| match d {
                DecodedEvent::Act(events) => events.clone(),
                DecodedEvent::Ignored { .. } => Vec::new(),
            })
            .collect()
    }

    fn auth0_entry(log_id: &str, code: &str, user: &str) -> Value {
        json!({"log_id": log_id, "data": {"type": code, "user_id": user, "date": "2026-11-22T10:00:00.123Z", "description": "x"}})
    }

    #[test]
    fn auth0_code_table() {
        assert_eq!(auth0_effect("sdu"), Some(Auth0Effect::Deprovision));
        assert_eq!(auth0_effect("ublkdu"), Some(Auth0Effect::Suspend));
        assert_eq!(auth0_effect("ubuu"), Some(Auth0Effect::Reactivate));
        for ignored in ["s", "f", "fp", "seacft", "SDU", ""] {
            assert_eq!(auth0_effect(ignored), None, "{ignored}");
        }
        let mut codes: Vec<&str> = AUTH0_EVENT_CODES.iter().map(|(c, _)| *c).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), AUTH0_EVENT_CODES.len(), "each code appears once");
        assert_eq!(Auth0Effect::Deprovision.change(), LifecycleChange::Deprovision);
    }

    #[test]
    fn auth0_array_object_and_lines_decode_alike() {
        let a = auth0_entry("90020261122", "sdu", "auth0|alice");
        let b = auth0_entry("90020261123", "s", "auth0|bob");
        let c = auth0_entry("90020261124", "ublkdu", "auth0|carol");
        let array = serde_json::to_vec(&json!([a, b, c])).unwrap();
        let lines = format!("{a}\n{b}\r\n\n{c}\n");
        let decoded = decode_auth0(&array).unwrap();
        assert_eq!(decoded, decode_auth0(lines.as_bytes()).unwrap());
        assert_eq!(decoded.len(), 3);
        assert_eq!(decoded[1], DecodedEvent::Ignored { event_type: "s".into() });
        let events = acts(&decoded);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event_id, "90020261122");
        assert_eq!(events[0].subject, "auth0|alice");
        assert_eq!(events[0].occurred_at, UnixTime(1_795_341_600));
        assert_eq!(events[0].change, LifecycleChange::Deprovision);
        assert_eq!(events[1].change, LifecycleChange::Suspend);

        let single = decode_auth0(a.to_string().as_bytes()).unwrap();
        assert_eq!(acts(&single), vec![events[0].clone()]);

        let reactivate = decode_auth0(auth0_entry("1", "ubuu", "auth0|x").to_string().as_bytes()).unwrap();
        assert_eq!(acts(&reactivate)[0].change, LifecycleChange::Reactivate);
    }

    #[test]
    fn auth0_log_id_may_sit_in_data() {
        let entry = json!({"data": {"log_id": "inner", "type": "sdu", "user_id": "u", "date": "2026-11-22T10:00:00Z"}});
        assert_eq!(acts(&decode_auth0(entry.to_string().as_bytes()).unwrap())[0].event_id, "inner");
    }

    #[test]
    fn auth0_ignored_codes_need_nothing_else() {
        let entry = json!({"data": {"type": "fp"}});
        assert_eq!(
            decode_auth0(entry.to_string().as_bytes()).unwrap(),
            vec![DecodedEvent::Ignored { event_type: "fp".into() }]
        );
        assert_eq!(decode_auth0(b"[]").unwrap(), vec![]);
    }

    #[test]
    fn auth0_malformed_shapes() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", b"  ".to_vec()),
            ("not json", b"{nope".to_vec()),
            ("array of numbers", b"[1, 2]".to_vec()),
            ("bare string", br#""sdu""#.to_vec()),
            ("no data", json!({"log_id": "1"}).to_string().into_bytes()),
            ("data not object", json!({"log_id": "1", "data": []}).to_string().into_bytes()),
            ("no type", json!({"log_id": "1", "data": {}}).to_string().into_bytes()),
            ("type not string", json!({"log_id": "1", "data": {"type": 5}}).to_string().into_bytes()),
            (
                "no log id",
                json!({"data": {"type": "sdu", "user_id": "u", "date": "2026-11-22T10:00:00Z"}}).to_string().into_bytes(),
            ),
            ("no user", json!({"log_id": "1", "data": {"type": "sdu", "date": "2026-11-22T10:00:00Z"}}).to_string().into_bytes()),
            ("no date", json!({"log_id": "1", "data": {"type": "sdu", "user_id": "u"}}).to_string().into_bytes()),
            (
                "bad date",
                json!({"log_id": "1", "data": {"type": "sdu", "user_id": "u", "date": "yesterday"}}).to_string().into_bytes(),
            ),
            (
                "long id",
                json!({"log_id": "x".repeat(256), "data": {"type": "sdu", "user_id": "u", "date": "2026-11-22T10:00:00Z"}})
                    .to_string()
                    .into_bytes(),
            ),
            ("broken line", format!("{}\n{{", auth0_entry("1", "sdu", "u")).into_bytes()),
        ];
        for (name, body) in cases {
            assert!(decode_auth0(&body).is_err(), "{name} must be malformed");
        }
        let e =
            decode_auth0(br#"[{"log_id":"1","data":{"type":"sdu","user_id":"secret-ish","date":"no"}}]"#).unwrap_err();
        assert!(e.0.starts_with("entry 0: data.date"), "{e}");
        assert!(!e.0.contains("secret-ish"));
    }

    fn svix(id: &str) -> SvixMessage<'_> {
        SvixMessage { id, timestamp: UnixTime(1_795_341_000) }
    }

    #[test]
    fn clerk_user_deleted() {
        let body = json!({"type": "user.deleted", "object": "event", "timestamp": 1_795_341_600_123_i64,
            "data": {"deleted": true, "id": "user_2abc", "object": "user"}});
        let decoded = decode_clerk(body.to_string().as_bytes(), &svix("msg_1")).unwrap();
        assert_eq!(
            acts(&decoded),
            vec![LifecycleEvent {
                event_id: "msg_1".into(),
                subject: "user_2abc".into(),
                occurred_at: UnixTime(1_795_341_600),
                change: LifecycleChange::Deprovision
            }]
        );
        // Without a timestamp the Svix one orders the event; seconds are recognised too.
        let body = json!({"type": "user.deleted", "data": {"id": "user_2abc"}});
        assert_eq!(
            acts(&decode_clerk(body.to_string().as_bytes(), &svix("m")).unwrap())[0].occurred_at,
            UnixTime(1_795_341_000)
        );
        let body = json!({"type": "user.deleted", "timestamp": 1_795_341_601, "data": {"id": "user_2abc"}});
        assert_eq!(
            acts(&decode_clerk(body.to_string().as_bytes(), &svix("m")).unwrap())[0].occurred_at,
            UnixTime(1_795_341_601)
        );
    }

    #[test]
    fn clerk_user_updated_profile_and_ban() {
        let body = json!({"type": "user.updated", "timestamp": 1_795_341_600_000_i64, "data": {
            "id": "user_1", "first_name": "Ada", "last_name": "Lovelace", "banned": true,
            "primary_email_address_id": "idn_2",
            "email_addresses": [{"id": "idn_1", "email_address": "old@example.com"}, {"id": "idn_2", "email_address": "ada@example.com"}]}});
        let events = acts(&decode_clerk(body.to_string().as_bytes(), &svix("msg_2")).unwrap());
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event_id, "msg_2");
        assert_eq!(
            events[0].change,
            LifecycleChange::Profile { email: Some("ada@example.com".into()), name: Some("Ada Lovelace".into()) }
        );
        assert_eq!(events[1].event_id, "msg_2:banned");
        assert_eq!(events[1].change, LifecycleChange::Suspend);

        let body = json!({"type": "user.updated", "data": {"id": "user_1", "first_name": null, "last_name": "Solo", "banned": false}});
        let events = acts(&decode_clerk(body.to_string().as_bytes(), &svix("msg_3")).unwrap());
        assert_eq!(events[0].change, LifecycleChange::Profile { email: None, name: Some("Solo".into()) });
        assert_eq!(events[1].change, LifecycleChange::Reactivate);

        let body = json!({"type": "user.updated", "data": {"id": "user_1"}});
        let events = acts(&decode_clerk(body.to_string().as_bytes(), &svix("msg_4")).unwrap());
        assert_eq!(
            events,
            vec![LifecycleEvent {
                event_id: "msg_4".into(),
                subject: "user_1".into(),
                occurred_at: UnixTime(1_795_341_000),
                change: LifecycleChange::Profile { email: None, name: None }
            }]
        );
    }

    #[test]
    fn clerk_membership_deleted() {
        let body = json!({"type": "organizationMembership.deleted", "timestamp": 1_795_341_600_000_i64, "data": {
            "id": "orgmem_1", "organization": {"id": "org_eng", "slug": "eng"}, "public_user_data": {"user_id": "user_1"}}});
        let events = acts(&decode_clerk(body.to_string().as_bytes(), &svix("msg_5")).unwrap());
        assert_eq!(events[0].subject, "user_1");
        assert_eq!(events[0].change, LifecycleChange::RemoveGroup("org_eng".into()));
    }

    #[test]
    fn clerk_other_types_are_ignored() {
        for t in ["user.created", "session.created", "organization.deleted", "email.created"] {
            let body = json!({"type": t, "data": {}});
            assert_eq!(
                decode_clerk(body.to_string().as_bytes(), &svix("m")).unwrap(),
                vec![DecodedEvent::Ignored { event_type: t.into() }]
            );
        }
    }

    #[test]
    fn clerk_malformed_shapes() {
        let cases = vec![
            ("empty", String::new()),
            ("array", "[]".to_string()),
            ("not json", "{".to_string()),
            ("no type", json!({"data": {"id": "u"}}).to_string()),
            ("no data", json!({"type": "user.deleted"}).to_string()),
            ("data not object", json!({"type": "user.deleted", "data": "u"}).to_string()),
            ("no id", json!({"type": "user.deleted", "data": {}}).to_string()),
            ("id not string", json!({"type": "user.deleted", "data": {"id": 5}}).to_string()),
            ("bad timestamp", json!({"type": "user.deleted", "timestamp": "now", "data": {"id": "u"}}).to_string()),
            ("banned not bool", json!({"type": "user.updated", "data": {"id": "u", "banned": "yes"}}).to_string()),
            ("name not string", json!({"type": "user.updated", "data": {"id": "u", "first_name": 1}}).to_string()),
            (
                "no org",
                json!({"type": "organizationMembership.deleted", "data": {"public_user_data": {"user_id": "u"}}})
                    .to_string(),
            ),
            (
                "no member",
                json!({"type": "organizationMembership.deleted", "data": {"organization": {"id": "o"}}}).to_string(),
            ),
        ];
        for (name, body) in cases {
            assert!(decode_clerk(body.as_bytes(), &svix("m")).is_err(), "{name} must be malformed");
        }
        let ok = json!({"type": "user.deleted", "data": {"id": "u"}}).to_string();
        assert!(decode(WebhookFormat::Clerk, ok.as_bytes(), None).is_err(), "Clerk needs its Svix headers");
        assert!(decode_clerk(ok.as_bytes(), &svix("")).is_err());
    }

    #[test]
    fn native_events() {
        let body = json!({"events": [
            {"id": "e1", "type": "user.deleted", "subject": "alice", "occurred_at": "2026-11-22T10:00:00Z"},
            {"id": "e2", "type": "user.suspended", "subject": "bob", "occurred_at": "2026-11-22T11:00:00+01:00"},
            {"id": "e3", "type": "user.reactivated", "subject": "bob", "occurred_at": "2026-11-22T10:00:01.5Z"},
            {"id": "e4", "type": "group.member_removed", "subject": "carol", "group": "eng", "occurred_at": "2026-11-22T10:00:02Z"},
            {"id": "e5", "type": "user.renamed", "whatever": true}
        ]});
        let decoded = decode_native(body.to_string().as_bytes()).unwrap();
        assert_eq!(decoded[4], DecodedEvent::Ignored { event_type: "user.renamed".into() });
        let events = acts(&decoded);
        let summary: Vec<_> = events
            .iter()
            .map(|e| (e.event_id.as_str(), e.subject.as_str(), e.occurred_at.0, e.change.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("e1", "alice", 1_795_341_600, LifecycleChange::Deprovision),
                ("e2", "bob", 1_795_341_600, LifecycleChange::Suspend),
                ("e3", "bob", 1_795_341_601, LifecycleChange::Reactivate),
                ("e4", "carol", 1_795_341_602, LifecycleChange::RemoveGroup("eng".into())),
            ]
        );
        assert_eq!(decode_native(br#"{"events": []}"#).unwrap(), vec![]);
        assert_eq!(WebhookFormat::for_kind(IdpKind::CustomOidc), WebhookFormat::Native);
        assert_eq!(WebhookFormat::for_kind(IdpKind::Auth0), WebhookFormat::Auth0LogStream);
        assert_eq!(WebhookFormat::for_kind(IdpKind::Clerk), WebhookFormat::Clerk);
    }

    #[test]
    fn native_malformed_shapes() {
        let event = |v: Value| json!({"events": [v]}).to_string();
        let cases = vec![
            ("empty", String::new()),
            ("not json", "events".to_string()),
            ("array", "[]".to_string()),
            ("no events", "{}".to_string()),
            ("events not array", json!({"events": {}}).to_string()),
            ("event not object", json!({"events": ["x"]}).to_string()),
            ("no id", event(json!({"type": "user.deleted", "subject": "a", "occurred_at": "2026-11-22T10:00:00Z"}))),
            ("no type", event(json!({"id": "1", "subject": "a", "occurred_at": "2026-11-22T10:00:00Z"}))),
            ("no subject", event(json!({"id": "1", "type": "user.deleted", "occurred_at": "2026-11-22T10:00:00Z"}))),
            (
                "empty subject",
                event(json!({"id": "1", "type": "user.deleted", "subject": "", "occurred_at": "2026-11-22T10:00:00Z"})),
            ),
            ("no time", event(json!({"id": "1", "type": "user.deleted", "subject": "a"}))),
            (
                "unix time",
                event(json!({"id": "1", "type": "user.deleted", "subject": "a", "occurred_at": 1_795_341_600})),
            ),
            (
                "bad time",
                event(json!({"id": "1", "type": "user.deleted", "subject": "a", "occurred_at": "2026-11-22 10:00"})),
            ),
            (
                "no group",
                event(
                    json!({"id": "1", "type": "group.member_removed", "subject": "a", "occurred_at": "2026-11-22T10:00:00Z"}),
                ),
            ),
            ("trailing", format!("{} x", json!({"events": []}))),
        ];
        for (name, body) in cases {
            assert!(decode_native(body.as_bytes()).is_err(), "{name} must be malformed");
        }
    }

    #[test]
    fn nul_characters_are_malformed_in_every_format() {
        let native = serde_json::to_vec(&json!({"events": [
            {"id": "e1", "type": "user.deleted", "subject": "ali\0ce", "occurred_at": "2026-11-22T10:00:00Z"}
        ]}))
        .unwrap();
        assert!(decode_native(&native).unwrap_err().0.contains("subject: must not contain NUL"));
        let auth0 = serde_json::to_vec(&auth0_entry("l1", "sdu", "auth0|a\0b")).unwrap();
        assert!(decode_auth0(&auth0).unwrap_err().0.contains("NUL"));
        let group = serde_json::to_vec(&json!({"events": [{"id": "e2", "type": "group.member_removed",
            "subject": "bob", "group": "e\0ng", "occurred_at": "2026-11-22T10:00:00Z"}]}))
        .unwrap();
        assert!(decode_native(&group).unwrap_err().0.contains("group: must not contain NUL"));
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("2026-11-22T10:00:00Z"), Some(UnixTime(1_795_341_600)));
        assert_eq!(parse_rfc3339("2026-11-22T12:00:00.999+02:00"), Some(UnixTime(1_795_341_600)));
        assert_eq!(parse_rfc3339("2026-11-22"), None);
    }
}
