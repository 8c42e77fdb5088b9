//! JSON in and out: bounded body reading (a size limit, a read timeout and a process-wide budget
//! of buffered bytes), parsing that names the offending field, responses, and RFC 3339 times.

use crate::problem::ApiError;
use bytes::Bytes;
use custody_identity::UnixTime;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The error type of response bodies (a streamed body can fail midway).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response: usually a buffer, a stream where a handler relays one (the
/// proxy).
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// The response type of every handler.
pub type HttpResponse = Response<ResponseBody>;

/// A response body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// How much request body the server buffers, for how long, and in total.
#[derive(Debug, Clone)]
pub struct BodyLimits {
    /// The largest body of one request.
    pub max_bytes: usize,
    /// How long reading one body may take (`CUSTODY_BODY_READ_TIMEOUT_SECS`).
    pub read_timeout: Duration,
    /// Body bytes buffered at once across every request in flight.
    pub budget: Arc<BodyBudget>,
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self { max_bytes: MAX_BODY_BYTES, read_timeout: Duration::from_secs(10), budget: BodyBudget::new(64 << 20) }
    }
}

/// The process-wide allowance of buffered request-body bytes (`CUSTODY_MAX_BUFFERED_BODY_MB`).
/// A request reserves what its body may take before reading it; with the allowance spent, it is
/// answered 503 with `Retry-After` instead of adding to the server's memory.
#[derive(Debug)]
pub struct BodyBudget {
    available: AtomicUsize,
}

impl BodyBudget {
    pub fn new(bytes: usize) -> Arc<Self> {
        Arc::new(Self { available: AtomicUsize::new(bytes) })
    }

    /// Takes `bytes` from the allowance until the permit is dropped, or `None` when it is spent.
    fn reserve(self: &Arc<Self>, bytes: usize) -> Option<BodyPermit> {
        self.available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |available| available.checked_sub(bytes))
            .ok()
            .map(|_| BodyPermit { budget: self.clone(), bytes })
    }
}

/// A share of the [`BodyBudget`], returned when dropped (when the request is done with its body).
#[derive(Debug)]
pub struct BodyPermit {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl Drop for BodyPermit {
    fn drop(&mut self) {
        self.budget.available.fetch_add(self.bytes, Ordering::AcqRel);
    }
}

/// Reads the whole body within `limits`: more than `max_bytes` is 413, a body that does not
/// arrive within `read_timeout` is 408, and no budget left is 503 `server_busy`. The permit
/// must be kept as long as the bytes are.
pub async fn read_body(
    body: Incoming,
    content_length: Option<&HeaderValue>,
    limits: &BodyLimits,
) -> Result<(Bytes, Option<BodyPermit>), ApiError> {
    let max = limits.max_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are limited to {max} bytes"),
        )
    };
    let declared = content_length.and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    if declared == Some(0) || body.is_end_stream() {
        return Ok((Bytes::new(), None));
    }
    // A body of unknown length may take the whole limit.
    let reserve = declared.map_or(max, |len| usize::try_from(len).unwrap_or(max));
    let permit = limits.budget.reserve(reserve).ok_or_else(ApiError::server_busy)?;
    match tokio::time::timeout(limits.read_timeout, Limited::new(body, max).collect()).await {
        Ok(Ok(collected)) => Ok((collected.to_bytes(), Some(permit))),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(_)) => Err(ApiError::invalid_request("the request body could not be read")),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("the request body did not arrive within {} s; send it at once", limits.read_timeout.as_secs()),
        )),
    }
}

/// Parses a JSON body; an error names the field at fault. An empty body parses as `{}`.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        // serde_json appends " at line L column C"; the field name is the useful part.
        let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
        if path.is_empty() || path == "." {
            ApiError::invalid_request(format!("invalid JSON body: {message}"))
        } else {
            ApiError::invalid_request(format!("{path}: {message}"))
        }
    })?;
    de.end().map_err(|_| ApiError::invalid_request("invalid JSON body: trailing characters"))?;
    Ok(parsed)
}

/// A JSON response.
pub fn json_response<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> HttpResponse {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A problem response.
pub fn problem_response(error: &ApiError) -> HttpResponse {
    let mut response = json_response(error.status, &error.body());
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    if error.code == "server_busy" {
        response.headers_mut().insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// An empty 204.
pub fn no_content() -> HttpResponse {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// A plain-text response.
pub fn text_response(status: StatusCode, content_type: &'static str, body: String) -> HttpResponse {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// RFC 3339 UTC with whole seconds (`2026-11-22T10:00:00Z`).
pub fn rfc3339(t: UnixTime) -> String {
    OffsetDateTime::from_unix_timestamp(t.seconds())
        .ok()
        .and_then(|d| d.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// As [`rfc3339`] for an optional time, `null` when absent.
pub fn rfc3339_opt(t: Option<UnixTime>) -> serde_json::Value {
    t.map(|t| serde_json::Value::String(rfc3339(t))).unwrap_or(serde_json::Value::Null)
}

/// Deserialises a field that distinguishes absent (`None`), `null` (`Some(None)`) and a value.
pub fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A 302 redirect to `location`.
pub fn redirect(location: &str) -> HttpResponse {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(hyper::header::LOCATION, v);
    }
    response.headers_mut().insert(hyper::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        #[serde(default)]
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }

    #[test]
    fn parse_errors_name_the_field() {
        let e = parse_json::<Body>(br#"{"name": 5}"#).unwrap_err();
        assert!(e.detail.starts_with("name:"), "{}", e.detail);
        let e = parse_json::<Body>(br#"{"name": "x", "inner": {"count": "many"}}"#).unwrap_err();
        assert!(e.detail.starts_with("inner.count:"), "{}", e.detail);
        let e = parse_json::<Body>(br#"{}"#).unwrap_err();
        assert!(e.detail.contains("missing field `name`"), "{}", e.detail);
        let e = parse_json::<Body>(b"{not json").unwrap_err();
        assert_eq!(e.code, "invalid_request");
    }

    #[test]
    fn times() {
        assert_eq!(rfc3339(UnixTime(1_795_341_600)), "2026-11-22T10:00:00Z");
    }
}
