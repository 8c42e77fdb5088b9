//! The outbound HTTP(S) client used for discovery documents, JWKS and (later) OAuth token
//! endpoints.
//!
//! It runs on hyper 1 through hyper-util's pooled client, with TLS from hyper-tls (OpenSSL, the
//! crypto stack josekit already links), and enforces the rules from the security model:
//!
//! - a connect timeout and an overall timeout that covers the whole exchange, body included;
//! - a response body limit;
//! - no redirects: a 3xx answer is an error;
//! - address rules: the client resolves host names itself and connects only to addresses that
//!   passed [`is_public_address`], so there is no window between the check and the connection
//!   for DNS rebinding. The address of every connected socket is checked once more. Loopback,
//!   private, link-local, shared (CGNAT), unique-local, unspecified, multicast, broadcast and
//!   reserved addresses are refused unless [`HttpClientSettings::allow_private_addresses`] is set
//!   (development and tests);
//! - `https` only, unless private addresses are allowed, in which case plain `http` is accepted
//!   too.
//!
//! Errors are [`HttpError`]s whose messages name the host at most, never a URL's path or query,
//! a header or a body.

use http::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_tls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tower_service::Service;
use url::{Host, Url};

pub mod upstream;

type BoxError = Box<dyn StdError + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// The default body limit: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// How the outbound client behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpClientSettings {
    /// Time allowed for resolving the host and for establishing the TCP connection.
    pub connect_timeout: Duration,
    /// Time allowed for the whole exchange: connection, TLS, request, response and body.
    pub request_timeout: Duration,
    /// The largest response body accepted when a call does not give its own limit.
    pub max_body_bytes: usize,
    /// Allows loopback, private and other non-public addresses, and plain `http` URLs.
    /// For development and tests only (`CUSTODY_ALLOW_INSECURE_ISSUERS`).
    pub allow_private_addresses: bool,
    /// The `User-Agent` header sent with every request.
    pub user_agent: String,
}

impl Default for HttpClientSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            allow_private_addresses: false,
            user_agent: concat!("custody/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Building the client failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpClientBuildError {
    /// The TLS library could not be initialised.
    #[error("the TLS library could not be initialised")]
    Tls,
    /// The configured user agent is not a valid header value.
    #[error("the configured user agent is not a valid header value")]
    UserAgent,
}

/// Why an outbound request failed. Messages name the host at most: never the URL's path or
/// query, a credential or a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The URL is not an absolute `http(s)` URL with a host, or carries credentials.
    #[error("the URL is not an acceptable absolute URL")]
    InvalidUrl,
    /// A plain `http` URL while private addresses are not allowed.
    #[error("the URL must use https")]
    InsecureScheme,
    /// The host is, or resolves only to, addresses that outbound requests may not reach.
    #[error("`{host}` is a loopback, private, link-local or reserved address, which is not allowed")]
    AddressNotAllowed {
        /// The host of the URL.
        host: String,
    },
    /// The host name did not resolve.
    #[error("`{host}` could not be resolved")]
    Resolve {
        /// The host of the URL.
        host: String,
    },
    /// No connection could be established.
    #[error("could not connect to `{host}`")]
    Connect {
        /// The host of the URL.
        host: String,
    },
    /// The TLS handshake failed (for example an untrusted certificate).
    #[error("the TLS handshake with `{host}` failed")]
    Tls {
        /// The host of the URL.
        host: String,
    },
    /// The connection or the whole exchange took too long.
    #[error("the request to `{host}` timed out")]
    Timeout {
        /// The host of the URL.
        host: String,
    },
    /// The server answered with a redirect, which is never followed.
    #[error("`{host}` answered with a redirect (HTTP {status}), which is not followed")]
    Redirect {
        /// The host of the URL.
        host: String,
        /// The 3xx status.
        status: u16,
    },
    /// The response body is larger than the limit.
    #[error("the response from `{host}` is larger than {limit} bytes")]
    BodyTooLarge {
        /// The host of the URL.
        host: String,
        /// The limit that applied.
        limit: usize,
    },
    /// The HTTP exchange failed after connecting (connection closed, protocol error).
    #[error("the HTTP exchange with `{host}` failed")]
    Transport {
        /// The host of the URL.
        host: String,
    },
}

/// A response: status, headers and the whole body.
#[derive(Clone)]
pub struct Response {
    /// The status code (never 3xx: redirects are errors).
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body, at most the limit that applied.
    pub body: Bytes,
}

impl Response {
    /// The first value of `name`, when it is valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// All values of `name` that are valid text, joined with `, ` (the list form of RFC 9110).
    pub fn header_joined(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
        if values.is_empty() {
            None
        } else {
            Some(values.join(", "))
        }
    }
}

impl fmt::Debug for Response {
    // Bodies can hold tokens (OAuth token endpoints): print only their size, and header names.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// Whether an outbound request may connect to `ip` when private addresses are not allowed.
///
/// Refused: IPv4 "this network" 0/8 (with the unspecified address), loopback 127/8, private
/// 10/8, 172.16/12 and 192.168/16 (RFC 1918), shared 100.64/10 (RFC 6598, CGNAT), link-local
/// 169.254/16, IETF protocol assignments 192.0.0/24, documentation ranges, benchmarking
/// 198.18/15, multicast 224/4, reserved 240/4 and broadcast; IPv6 unspecified, loopback,
/// IPv4-compatible `::/96`, discard-only 100::/64, documentation 2001:db8::/32, unique-local
/// fc00::/7, link-local fe80::/10, site-local fec0::/10 and multicast ff00::/8. IPv6 addresses
/// that embed an IPv4 address (mapped `::ffff:0:0/96`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`)
/// are judged by the embedded address.
pub fn is_public_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let refused = a == 0
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || (a == 100 && (b & 0xc0) == 64)
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 0 && c == 2)
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || (a == 198 && (b & 0xfe) == 18)
        || ip.is_multicast()
        || a >= 240;
    !refused
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    let embedded_low = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return is_public_v4(embedded_low());
    }
    if s[0] == 0x2002 {
        let embedded = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return is_public_v4(embedded);
    }
    let refused = s[0..6] == [0, 0, 0, 0, 0, 0]
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0])
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0
        || ip.is_multicast();
    !refused
}

/// Failures raised inside the connector, recognised again when the client reports an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectFailure {
    Resolve,
    ResolveTimeout,
    AddressNotAllowed,
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectFailure::Resolve => "the host did not resolve",
            ConnectFailure::ResolveTimeout => "resolving the host timed out",
            ConnectFailure::AddressNotAllowed => "the address is not allowed",
        })
    }
}

impl StdError for ConnectFailure {}

/// Resolves host names and keeps only the addresses the rules allow; the connector then
/// connects to exactly these addresses.
#[derive(Debug, Clone)]
struct CheckedResolver {
    allow_private: bool,
    timeout: Duration,
}

impl Service<Name> for CheckedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        let timeout = self.timeout;
        Box::pin(async move {
            let lookup = tokio::net::lookup_host((name.as_str(), 0));
            let addrs = match tokio::time::timeout(timeout, lookup).await {
                Err(_) => return Err(ConnectFailure::ResolveTimeout.into()),
                Ok(Err(_)) => return Err(ConnectFailure::Resolve.into()),
                Ok(Ok(addrs)) => addrs.collect::<Vec<_>>(),
            };
            if addrs.is_empty() {
                return Err(ConnectFailure::Resolve.into());
            }
            let allowed: Vec<SocketAddr> =
                addrs.into_iter().filter(|a| allow_private || is_public_address(a.ip())).collect();
            if allowed.is_empty() {
                return Err(ConnectFailure::AddressNotAllowed.into());
            }
            Ok(allowed.into_iter())
        })
    }
}

/// The TCP connector with one more check: the peer address of the connected socket must be
/// allowed (this also covers URLs whose host is an IP literal, which skip the resolver).
#[derive(Debug, Clone)]
struct GuardedConnector {
    inner: HttpConnector<CheckedResolver>,
    allow_private: bool,
}

impl Service<hyper::Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: hyper::Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let allow_private = self.allow_private;
        Box::pin(async move {
            let io = connecting.await?;
            if !allow_private {
                let peer = io.inner().peer_addr()?;
                if !is_public_address(peer.ip()) {
                    return Err(ConnectFailure::AddressNotAllowed.into());
                }
            }
            Ok(io)
        })
    }
}

/// The outbound client. Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<GuardedConnector>, Full<Bytes>>,
    config: HttpClientSettings,
    user_agent: HeaderValue,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient").field("settings", &self.config).finish_non_exhaustive()
    }
}

impl HttpClient {
    /// Builds a client. Construction does no network I/O and needs no runtime; requests must run inside
    /// a Tokio runtime.
    pub fn new(config: HttpClientSettings) -> Result<Self, HttpClientBuildError> {
        let user_agent = HeaderValue::from_str(&config.user_agent).map_err(|_| HttpClientBuildError::UserAgent)?;
        let resolver =
            CheckedResolver { allow_private: config.allow_private_addresses, timeout: config.connect_timeout };
        let mut http = HttpConnector::new_with_resolver(resolver);
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        let guarded = GuardedConnector { inner: http, allow_private: config.allow_private_addresses };
        let tls = native_tls::TlsConnector::builder()
            .min_protocol_version(Some(native_tls::Protocol::Tlsv12))
            .build()
            .map_err(|_| HttpClientBuildError::Tls)?;
        let mut https = HttpsConnector::from((guarded, tokio_native_tls::TlsConnector::from(tls)));
        https.https_only(!config.allow_private_addresses);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(4)
            .build(https);
        Ok(Self { client, config, user_agent })
    }

    /// The configuration the client was built with.
    pub fn settings(&self) -> &HttpClientSettings {
        &self.config
    }

    /// `GET url` with `Accept: application/json`, body limited to the configured maximum.
    pub async fn get(&self, url: &str) -> Result<Response, HttpError> {
        self.get_with_limit(url, self.config.max_body_bytes).await
    }

    /// `GET url` with `Accept: application/json`, body limited to `max_body_bytes`.
    pub async fn get_with_limit(&self, url: &str, max_body_bytes: usize) -> Result<Response, HttpError> {
        self.execute(Method::GET, url, HeaderMap::new(), Bytes::new(), max_body_bytes).await
    }

    /// `POST url` with an `application/x-www-form-urlencoded` body built from `form`, and, when
    /// `basic_auth` is given as `(client_id, client_secret)`, HTTP Basic authentication as
    /// RFC 6749 section 2.3.1 specifies it (both parts form-urlencoded before base64). The body
    /// is limited to the configured maximum.
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        basic_auth: Option<(&str, &str)>,
    ) -> Result<Response, HttpError> {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form.iter()).finish();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        if let Some((id, secret)) = basic_auth {
            headers.insert(AUTHORIZATION, basic_authorization(id, secret)?);
        }
        self.execute(Method::POST, url, headers, Bytes::from(body), self.config.max_body_bytes).await
    }

    async fn execute(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Bytes,
        max_body_bytes: usize,
    ) -> Result<Response, HttpError> {
        let target = self.check_url(url)?;
        let host = target.host.clone();
        let mut request = http::Request::builder().method(method).uri(target.uri);
        if let Some(h) = request.headers_mut() {
            h.insert(USER_AGENT, self.user_agent.clone());
            h.insert(ACCEPT, HeaderValue::from_static("application/json"));
            h.extend(headers);
        }
        let request = request.body(Full::new(body)).map_err(|_| HttpError::InvalidUrl)?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| classify(&e, e.is_connect(), &host))?;
            let status = response.status();
            if status.is_redirection() {
                return Err(HttpError::Redirect { host: host.clone(), status: status.as_u16() });
            }
            let too_large = || HttpError::BodyTooLarge { host: host.clone(), limit: max_body_bytes };
            let declared = response
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|len| len > max_body_bytes as u64) {
                return Err(too_large());
            }
            let (parts, incoming) = response.into_parts();
            let collected = Limited::new(incoming, max_body_bytes).collect().await.map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    too_large()
                } else {
                    classify(e.as_ref(), false, &host)
                }
            })?;
            Ok(Response { status: parts.status, headers: parts.headers, body: collected.to_bytes() })
        };
        let result = match tokio::time::timeout(self.config.request_timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout { host: host.clone() }),
        };
        match &result {
            Ok(r) => tracing::debug!(host = %host, path = %target.path, status = r.status.as_u16(), "outbound request"),
            Err(e) => tracing::debug!(host = %host, path = %target.path, error = %e, "outbound request failed"),
        }
        result
    }

    fn check_url(&self, raw: &str) -> Result<Target, HttpError> {
        let url = Url::parse(raw).map_err(|_| HttpError::InvalidUrl)?;
        match url.scheme() {
            "https" => {}
            "http" if self.config.allow_private_addresses => {}
            "http" => return Err(HttpError::InsecureScheme),
            _ => return Err(HttpError::InvalidUrl),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(HttpError::InvalidUrl);
        }
        let host = url.host().ok_or(HttpError::InvalidUrl)?;
        let literal = match host {
            Host::Domain(_) => None,
            Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        };
        let host = url.host_str().unwrap_or_default().to_owned();
        if let Some(ip) = literal {
            if !self.config.allow_private_addresses && !is_public_address(ip) {
                return Err(HttpError::AddressNotAllowed { host });
            }
        }
        let mut without_fragment = url.clone();
        without_fragment.set_fragment(None);
        let uri = without_fragment.as_str().parse::<hyper::Uri>().map_err(|_| HttpError::InvalidUrl)?;
        Ok(Target { uri, host, path: url.path().to_owned() })
    }
}

struct Target {
    uri: hyper::Uri,
    host: String,
    /// For logs: the path only, never the query.
    path: String,
}

fn basic_authorization(id: &str, secret: &str) -> Result<HeaderValue, HttpError> {
    use base64::Engine as _;
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let credentials = format!("{}:{}", encode(id), encode(secret));
    let mut value = HeaderValue::from_str(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials.as_bytes())
    ))
    .map_err(|_| HttpError::InvalidUrl)?;
    value.set_sensitive(true);
    Ok(value)
}

/// Maps a client error to an [`HttpError`] by walking its sources for the failures this module
/// raises itself, TLS errors and timeouts.
fn classify(error: &(dyn StdError + 'static), is_connect: bool, host: &str) -> HttpError {
    let host = host.to_owned();
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(failure) = e.downcast_ref::<ConnectFailure>() {
            return match failure {
                ConnectFailure::Resolve => HttpError::Resolve { host },
                ConnectFailure::ResolveTimeout => HttpError::Timeout { host },
                ConnectFailure::AddressNotAllowed => HttpError::AddressNotAllowed { host },
            };
        }
        if e.downcast_ref::<native_tls::Error>().is_some() {
            return HttpError::Tls { host };
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return HttpError::Timeout { host };
            }
        }
        current = e.source();
    }
    if is_connect {
        HttpError::Connect { host }
    } else {
        HttpError::Transport { host }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn public(s: &str) -> bool {
        is_public_address(s.parse().unwrap())
    }

    #[test]
    fn address_classification() {
        for refused in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:c0a8:0101::1",
            "2001:db8::1",
        ] {
            assert!(!public(refused), "{refused} must be refused");
        }
        for allowed in [
            "1.1.1.1",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "192.169.0.1",
            "169.255.0.1",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(public(allowed), "{allowed} must be allowed");
        }
    }

    fn client(allow_private: bool) -> HttpClient {
        HttpClient::new(HttpClientSettings {
            allow_private_addresses: allow_private,
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_millis(700),
            max_body_bytes: 64,
            ..HttpClientSettings::default()
        })
        .unwrap()
    }

    /// A one-shot HTTP server on loopback that answers each connection with `response`.
    async fn serve(response: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for _ in 0..4 {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                let mut buf = [0u8; 2048];
                let _ = socket.read(&mut buf).await;
                if !response.is_empty() {
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                } else {
                    // Never answer.
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        });
        format!("http://{addr}/x?secret=1")
    }

    #[tokio::test]
    async fn url_rules() {
        let strict = client(false);
        assert_eq!(strict.get("http://example.com/").await.unwrap_err(), HttpError::InsecureScheme);
        assert_eq!(strict.get("ftp://example.com/").await.unwrap_err(), HttpError::InvalidUrl);
        assert_eq!(strict.get("not a url").await.unwrap_err(), HttpError::InvalidUrl);
        assert_eq!(strict.get("https://u:p@example.com/").await.unwrap_err(), HttpError::InvalidUrl);
        assert_eq!(
            strict.get("https://127.0.0.1:1/").await.unwrap_err(),
            HttpError::AddressNotAllowed { host: "127.0.0.1".into() }
        );
        assert_eq!(
            strict.get("https://[::1]:1/").await.unwrap_err(),
            HttpError::AddressNotAllowed { host: "[::1]".into() }
        );
        assert_eq!(
            strict.get("https://169.254.169.254/latest/meta-data").await.unwrap_err(),
            HttpError::AddressNotAllowed { host: "169.254.169.254".into() }
        );
        // A name that resolves to loopback is refused by the resolver, before any connection.
        assert_eq!(
            strict.get("https://localhost:1/").await.unwrap_err(),
            HttpError::AddressNotAllowed { host: "localhost".into() }
        );
    }

    #[tokio::test]
    async fn reads_a_response() {
        let url = serve("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}").await;
        let response = client(true).get(&url).await.unwrap();
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(&response.body[..], b"{}");
        let debug = format!("{response:?}");
        assert!(debug.contains("body_bytes: 2") && !debug.contains("{}"));
    }

    #[tokio::test]
    async fn redirects_are_errors() {
        let url = serve("HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:1/\r\ncontent-length: 0\r\n\r\n").await;
        assert_eq!(
            client(true).get(&url).await.unwrap_err(),
            HttpError::Redirect { host: "127.0.0.1".into(), status: 302 }
        );
    }

    #[tokio::test]
    async fn body_limit() {
        let declared = serve("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n").await;
        assert!(matches!(client(true).get(&declared).await, Err(HttpError::BodyTooLarge { limit: 64, .. })));
        let chunked = serve(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n50\r\n\
             01234567890123456789012345678901234567890123456789012345678901234567890123456789\r\n0\r\n\r\n",
        )
        .await;
        assert!(matches!(client(true).get(&chunked).await, Err(HttpError::BodyTooLarge { limit: 64, .. })));
    }

    #[tokio::test]
    async fn overall_timeout() {
        let url = serve("").await;
        let started = std::time::Instant::now();
        assert_eq!(client(true).get(&url).await.unwrap_err(), HttpError::Timeout { host: "127.0.0.1".into() });
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn connection_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = client(true).get(&format!("http://{addr}/")).await.unwrap_err();
        assert_eq!(err, HttpError::Connect { host: "127.0.0.1".into() });
    }

    #[test]
    fn basic_auth_encodes_per_rfc_6749() {
        use base64::Engine as _;
        let value = basic_authorization("my id", "s3cr:t/+").unwrap();
        assert!(value.is_sensitive());
        let encoded = value.to_str().unwrap().strip_prefix("Basic ").unwrap().to_owned();
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
        assert_eq!(decoded, b"my+id:s3cr%3At%2F%2B");
    }

    #[tokio::test]
    async fn posts_a_form() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut received = Vec::new();
            let mut buf = [0u8; 2048];
            while !String::from_utf8_lossy(&received).ends_with("a+b%26c") {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                received.extend_from_slice(&buf[..n]);
            }
            socket.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await.unwrap();
            String::from_utf8(received).unwrap()
        });
        let response = client(true)
            .post_form(
                &format!("http://{addr}/token"),
                &[("grant_type", "refresh_token"), ("x", "a b&c")],
                Some(("id", "pw")),
            )
            .await
            .unwrap();
        assert_eq!(response.status, StatusCode::BAD_REQUEST);
        let request = server.await.unwrap().to_ascii_lowercase();
        assert!(request.starts_with("post /token http/1.1"));
        assert!(request.contains("content-type: application/x-www-form-urlencoded"));
        assert!(request.contains("authorization: basic awq6chc="));
        assert!(request.ends_with("grant_type=refresh_token&x=a+b%26c"));
    }
}
