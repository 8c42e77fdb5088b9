//! The JSON reading shared by the webhook decoders of every identity-provider adapter: typed
//! field access whose messages name the place at fault and never repeat a value from the body.

use custody_identity::claims::MAX_SUBJECT_LEN;
use custody_identity::lifecycle::{MalformedPayload, MAX_EVENT_ID_LEN};
use custody_identity::UnixTime;
use serde_json::Value;

/// A field's value, or a message naming the field.
pub(crate) type Field<T> = Result<T, String>;

pub(crate) fn object<'a>(value: &'a Value, what: &str) -> Field<&'a serde_json::Map<String, Value>> {
    value.as_object().ok_or_else(|| format!("{what}: expected an object"))
}

/// The value at `path` below `value`, if present and not null.
pub(crate) fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key)).filter(|v| !v.is_null())
}

/// The non-empty string at `path`, at most `max` bytes.
pub(crate) fn required_str<'a>(value: &'a Value, path: &[&str], max: usize) -> Field<&'a str> {
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

pub(crate) fn subject(value: &Value, path: &[&str]) -> Field<String> {
    required_str(value, path, MAX_SUBJECT_LEN).map(str::to_owned)
}

pub(crate) fn event_id(value: &Value, path: &[&str]) -> Field<String> {
    required_str(value, path, MAX_EVENT_ID_LEN).map(str::to_owned)
}

/// An RFC 3339 time at `path`, to whole seconds.
pub(crate) fn rfc3339_at(value: &Value, path: &[&str]) -> Field<UnixTime> {
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
pub(crate) fn json_values(body: &[u8]) -> Result<Vec<Value>, MalformedPayload> {
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
pub(crate) fn json_error(e: &serde_json::Error) -> String {
    let category = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected value",
        serde_json::error::Category::Eof => "unexpected end",
    };
    format!("{category} at line {} column {}", e.line(), e.column())
}

pub(crate) fn json_document(body: &[u8]) -> Result<Value, MalformedPayload> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(MalformedPayload("the body is empty".into()));
    }
    serde_json::from_slice(body).map_err(|e| MalformedPayload(format!("not JSON: {}", json_error(&e))))
}
