//! `{METHOD} /v1/proxy/{provider}/{path...}`: calls the provider's API with the user's grant, so
//! the access token never leaves Custody. The vault decides who may use which grant (the same
//! rules as `POST /v1/token`, except that a `proxy_only` policy is fine here); this handler
//! confines the path to the provider's `api_base_url`, filters headers both ways, streams the
//! bodies (the request's within 10 MiB), retries once after a forced refresh when the provider
//! answers 401 to a replayable request, and has the vault write the `proxy.request` audit row
//! once the answer's body has been sent.

use super::runtime::acting_user;
use super::Call;
use crate::json::{HttpResponse, ResponseBody};
use crate::problem::ApiError;
use crate::state::AppState;
use bytes::Bytes;
use custody_providers::http::upstream::{Deadline, Metered, UpstreamBody};
use custody_providers::HttpError;
use custody_vault::service::{GrantSelector, ProxyLease, ProxyRecord};
use custody_vault::{GrantId, ProviderName};
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, HOST};
use hyper::{Method, Request, StatusCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// The largest request body forwarded.
pub const MAX_PROXY_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// Request bodies up to this size are read first, so a request can be sent again after a
/// forced refresh; larger ones stream and are not retried.
const REPLAYABLE_BODY_BYTES: u64 = 64 * 1024;

/// Hop-by-hop headers (RFC 9110 section 7.6.1), never forwarded either way.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn invalid_path(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_proxy_path",
        format!("the proxied path {why}; give a path relative to the provider's API, such as /v1/proxy/github/user"),
    )
}

/// The upstream URL for the raw `path` (after `/v1/proxy/{provider}/`) and raw `query`, confined
/// to `base`: no `.` or `..` segment (plain or percent-encoded), no encoded `/` or `\`, no
/// empty first segment (`//host`), no scheme, nothing that leaves the base after parsing.
pub fn upstream_url(base: &str, path: &str, query: Option<&str>) -> Result<url::Url, ApiError> {
    if path.starts_with('/') {
        return Err(invalid_path("must not start with another `/`"));
    }
    if path.bytes().any(|b| b == b'\\' || b == b'#' || b.is_ascii_control() || b == b' ') {
        return Err(invalid_path("contains a backslash, a fragment, a space or a control character"));
    }
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || lower.contains("%00") {
        return Err(invalid_path("contains an encoded `/`, `\\` or NUL"));
    }
    if path.split('/').next().is_some_and(|first| first.contains(':')) {
        return Err(invalid_path("looks like an absolute URL (a scheme)"));
    }
    for segment in path.split('/') {
        let decoded = percent_decode(segment).ok_or_else(|| invalid_path("is not valid percent-encoded UTF-8"))?;
        if decoded == "." || decoded == ".." {
            return Err(invalid_path("contains a `.` or `..` segment"));
        }
    }
    let mut raw = format!("{base}/{path}");
    if let Some(q) = query {
        raw.push('?');
        raw.push_str(q);
    }
    let url = url::Url::parse(&raw).map_err(|_| invalid_path("does not form a valid URL"))?;
    let base_url =
        url::Url::parse(base).map_err(|_| invalid_path("cannot be joined to the provider's api_base_url"))?;
    let base_path = base_url.path().trim_end_matches('/');
    let confined = url.scheme() == base_url.scheme()
        && url.host_str() == base_url.host_str()
        && url.port_or_known_default() == base_url.port_or_known_default()
        && url.path().starts_with(&format!("{base_path}/"));
    if !confined {
        return Err(invalid_path("leaves the provider's api_base_url"));
    }
    Ok(url)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The names a `Connection` header lists, which are hop-by-hop for this message too.
fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

/// The request headers forwarded upstream: all but hop-by-hop ones, credentials meant for
/// Custody, cookies, `Host` and `X-Custody-*`.
fn forwarded_request_headers(headers: &HeaderMap) -> HeaderMap {
    let listed = connection_listed(headers);
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        let dropped = HOP_BY_HOP.contains(&n)
            || listed.iter().any(|l| l == n)
            || name == AUTHORIZATION
            || name == hyper::header::COOKIE
            || name == HOST
            || n == "x-user-token"
            || n.starts_with("x-custody-");
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// The response headers returned: all but hop-by-hop ones and `Set-Cookie`.
fn returned_response_headers(headers: &HeaderMap) -> HeaderMap {
    let listed = connection_listed(headers);
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        if !(HOP_BY_HOP.contains(&n) || listed.iter().any(|l| l == n) || name == hyper::header::SET_COOKIE) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// What the request body is: nothing, bytes read whole (replayable), or a stream.
enum OutgoingBody {
    Replayable(Bytes),
    Streamed(Option<UpstreamBody>),
}

/// Reads small bodies whole (so the request can be replayed) and wraps larger ones to stream
/// within the limit.
async fn outgoing_body(
    call: &mut Call,
    sent: &Arc<AtomicU64>,
    exceeded: &Arc<AtomicBool>,
) -> Result<OutgoingBody, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the proxied request body is larger than {MAX_PROXY_BODY_BYTES} bytes"),
        )
    };
    let declared =
        call.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_PROXY_BODY_BYTES) {
        return Err(too_large());
    }
    let Some(stream) = call.stream.take() else { return Ok(OutgoingBody::Replayable(Bytes::new())) };
    if declared.is_some_and(|len| len <= REPLAYABLE_BODY_BYTES) {
        let bytes = Limited::new(stream, REPLAYABLE_BODY_BYTES as usize)
            .collect()
            .await
            .map_err(|_| ApiError::invalid_request("the request body could not be read"))?
            .to_bytes();
        sent.store(bytes.len() as u64, Ordering::SeqCst);
        return Ok(OutgoingBody::Replayable(bytes));
    }
    let metered = Metered::new(stream, MAX_PROXY_BODY_BYTES, sent.clone(), exceeded.clone());
    Ok(OutgoingBody::Streamed(Some(BodyExt::boxed_unsync(metered))))
}

fn full_body(bytes: Bytes) -> UpstreamBody {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

/// The handler of every proxied method.
pub async fn forward(state: Arc<AppState>, mut call: Call) -> Result<HttpResponse, ApiError> {
    let user = acting_user(&state, &mut call).await?;
    let provider =
        ProviderName::parse(call.param(0)).map_err(|e| ApiError::invalid_request(format!("provider: {e}")))?;
    let prefix = format!("/v1/proxy/{}/", call.param(0));
    let raw_path = call.uri.path().strip_prefix(&prefix).ok_or_else(|| invalid_path("is missing"))?.to_owned();
    let raw_query = call.uri.query().map(str::to_owned);
    let selector = match call.headers.get("x-custody-grant-id") {
        None => GrantSelector::Provider(provider.clone()),
        Some(v) => GrantSelector::Id(
            v.to_str().ok().and_then(|s| GrantId::parse(s.trim()).ok()).ok_or_else(ApiError::grant_not_found)?,
        ),
    };
    let mut lease = state.vault().proxy_lease(&user, &selector).await?;
    if lease.grant.provider != provider {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "grant_not_found", "the grant is not one of this provider's"));
    }
    let url = upstream_url(&lease.api_base_url, &raw_path, raw_query.as_deref())?;
    let (uri, host) = state.upstream().target(&url).map_err(|e| ApiError::from(&e))?;
    let sent = Arc::new(AtomicU64::new(0));
    let exceeded = Arc::new(AtomicBool::new(false));
    let mut body = outgoing_body(&mut call, &sent, &exceeded).await?;
    let headers = forwarded_request_headers(&call.headers);
    let started = tokio::time::Instant::now();
    let deadline = started + state.upstream().settings().overall_timeout;
    let record = |status: Option<u16>, sent: u64, received: u64| ProxyRecord {
        method: call.method.to_string(),
        host: host.clone(),
        path: url.path().to_owned(),
        upstream_status: status,
        bytes_sent: sent,
        bytes_received: received,
    };
    let mut retried = false;
    let response = loop {
        let request_body = match &mut body {
            OutgoingBody::Replayable(bytes) => full_body(bytes.clone()),
            OutgoingBody::Streamed(stream) => stream.take().unwrap_or_else(|| full_body(Bytes::new())),
        };
        let request = build_request(&call.method, &uri, &headers, &lease, request_body)?;
        let answer = match tokio::time::timeout_at(deadline, state.upstream().send(request, &host)).await {
            Ok(answer) => answer,
            Err(_) => Err(HttpError::Timeout { host: host.clone() }),
        };
        let response = match answer {
            Ok(response) => response,
            Err(e) => {
                let audit = record(None, sent.load(Ordering::SeqCst), 0);
                let _ = state.vault().record_proxy(&lease, &audit).await;
                if exceeded.load(Ordering::SeqCst) {
                    return Err(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!("the proxied request body is larger than {MAX_PROXY_BODY_BYTES} bytes"),
                    ));
                }
                return Err(ApiError::from(&e));
            }
        };
        let replayable = matches!(body, OutgoingBody::Replayable(_));
        if response.status() == StatusCode::UNAUTHORIZED && replayable && !retried {
            retried = true;
            if state.vault().proxy_force_refresh(&mut lease).await?.is_some() {
                continue;
            }
        }
        break response;
    };
    let status = response.status();
    let (parts, incoming) = response.into_parts();
    let mut headers = returned_response_headers(&parts.headers);
    headers.insert("x-custody-proxy", HeaderValue::from_static("upstream"));
    if let Ok(v) = HeaderValue::from_str(lease.grant.id.as_str()) {
        headers.insert(HeaderName::from_static("x-custody-grant-id"), v);
    }
    let audit_vault = state.vault().clone();
    let audit_base = record(Some(status.as_u16()), 0, 0);
    let sent_total = sent.clone();
    let lease = Arc::new(lease);
    let body = Deadline::new(incoming, deadline, move |received, _clean| {
        let audit =
            ProxyRecord { bytes_sent: sent_total.load(Ordering::SeqCst), bytes_received: received, ..audit_base };
        // The row is written after the answer went out; a failure to write it is logged.
        tokio::spawn(async move {
            if let Err(e) = audit_vault.record_proxy(&lease, &audit).await {
                tracing::warn!(error = %e, "could not record a proxied request in the audit log");
            }
        });
    });
    let mut out = hyper::Response::new(ResponseBody::new(body));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

fn build_request(
    method: &Method,
    uri: &hyper::Uri,
    headers: &HeaderMap,
    lease: &ProxyLease,
    body: UpstreamBody,
) -> Result<Request<UpstreamBody>, ApiError> {
    let mut request = Request::builder().method(method.clone()).uri(uri.clone());
    if let Some(h) = request.headers_mut() {
        h.extend(headers.clone());
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", lease.access_token.expose())).map_err(|_| {
            ApiError::new(StatusCode::BAD_GATEWAY, "provider_error", "the stored token is not a valid header value")
        })?;
        bearer.set_sensitive(true);
        h.insert(AUTHORIZATION, bearer);
    }
    request.body(body).map_err(|_| invalid_path("does not form a valid request"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://api.example.com/v2";

    #[test]
    fn paths_stay_under_the_base() {
        let ok = |p: &str, q: Option<&str>| upstream_url(BASE, p, q).map(|u| u.to_string());
        assert_eq!(ok("user", None).unwrap(), "https://api.example.com/v2/user");
        assert_eq!(
            ok("repos/a%20b/issues", Some("state=open&x=1&x=2")).unwrap(),
            "https://api.example.com/v2/repos/a%20b/issues?state=open&x=1&x=2"
        );
        for bad in [
            "../admin",
            "a/../../x",
            "%2e%2e/x",
            "a/%2E%2e/b",
            ".%2e/x",
            "a%2fb",
            "a%5Cb",
            "/evil.example/x",
            "https://evil.example/x",
            "http:x",
            "a\\b",
            "./x",
        ] {
            let e = upstream_url(BASE, bad, None).unwrap_err();
            assert_eq!(e.code, "invalid_proxy_path", "{bad}");
        }
    }

    #[test]
    fn header_filtering() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("authorization", "Bearer ck"),
            ("x-user-token", "jwt"),
            ("cookie", "a=b"),
            ("host", "x"),
            ("x-custody-grant-id", "g"),
            ("connection", "x-private"),
            ("x-private", "1"),
            ("te", "trailers"),
            ("accept", "application/json"),
            ("x-trace", "t"),
        ] {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        let f = forwarded_request_headers(&h);
        let names: Vec<&str> = f.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept", "x-trace"]);
        let mut r = HeaderMap::new();
        for (n, v) in [
            ("set-cookie", "s=1"),
            ("keep-alive", "timeout=5"),
            ("content-type", "application/json"),
            ("x-ratelimit-remaining", "9"),
        ] {
            r.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        let names: Vec<String> = returned_response_headers(&r).keys().map(|k| k.to_string()).collect();
        assert_eq!(names, ["content-type", "x-ratelimit-remaining"]);
    }
}
