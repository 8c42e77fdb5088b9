//! The proxy's outbound client: like [`HttpClient`](super::HttpClient) it resolves and checks
//! addresses itself (the same [`GuardedConnector`](super::GuardedConnector) and resolver, so the
//! same address rules and `https`-only rule apply), never follows redirects and has a connect
//! timeout; unlike it, request and response bodies are streams, never held whole. The overall
//! timeout covers the answer's head here; the caller bounds the response body with
//! [`Deadline`].

use super::{classify, BoxError, CheckedResolver, GuardedConnector, HttpClientBuildError, HttpError};
use http::Request;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper_tls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::fmt;
use std::future::Future as _;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use url::{Host, Url};

/// A request body going upstream.
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// How the proxy client behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    /// From sending the request until the whole answer arrived.
    pub overall_timeout: Duration,
    /// Private and loopback addresses, and plain `http`, allowed (development and tests).
    pub allow_private_addresses: bool,
}

/// The proxy's client. Cheap to clone.
#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<HttpsConnector<GuardedConnector>, UpstreamBody>,
    settings: UpstreamSettings,
}

impl fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamClient").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl UpstreamClient {
    pub fn new(settings: UpstreamSettings) -> Result<Self, HttpClientBuildError> {
        let allow_private = settings.allow_private_addresses;
        let resolver = CheckedResolver { allow_private, timeout: settings.connect_timeout };
        let mut http = HttpConnector::new_with_resolver(resolver);
        http.enforce_http(false);
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.set_nodelay(true);
        let guarded = GuardedConnector { inner: http, allow_private };
        let tls = native_tls::TlsConnector::builder()
            .min_protocol_version(Some(native_tls::Protocol::Tlsv12))
            .build()
            .map_err(|_| HttpClientBuildError::Tls)?;
        let mut https = HttpsConnector::from((guarded, tokio_native_tls::TlsConnector::from(tls)));
        https.https_only(!allow_private);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(8)
            .build(https);
        Ok(Self { client, settings })
    }

    pub fn settings(&self) -> &UpstreamSettings {
        &self.settings
    }

    /// Checks `url` against the outbound rules (scheme, no credentials, IP literals) and returns
    /// it as a request URI and its host.
    pub fn target(&self, url: &Url) -> Result<(hyper::Uri, String), HttpError> {
        match url.scheme() {
            "https" => {}
            "http" if self.settings.allow_private_addresses => {}
            "http" => return Err(HttpError::InsecureScheme),
            _ => return Err(HttpError::InvalidUrl),
        }
        if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
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
            if !self.settings.allow_private_addresses && !super::is_public_address(ip) {
                return Err(HttpError::AddressNotAllowed { host });
            }
        }
        let uri = url.as_str().parse::<hyper::Uri>().map_err(|_| HttpError::InvalidUrl)?;
        Ok((uri, host))
    }

    /// Sends `request` (whose URI came from [`UpstreamClient::target`]) and waits for the
    /// answer's head within the overall timeout. The body is left to stream.
    pub async fn send(
        &self,
        request: Request<UpstreamBody>,
        host: &str,
    ) -> Result<http::Response<Incoming>, HttpError> {
        match tokio::time::timeout(self.settings.overall_timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(classify(&e, e.is_connect(), host)),
            Err(_) => Err(HttpError::Timeout { host: host.to_owned() }),
        }
    }
}

/// A body that ends with an error once `deadline` passes, and calls `on_end` once with the
/// number of data bytes that went through and whether it ended cleanly (also when dropped
/// early, e.g. because the client went away).
pub struct Deadline<B> {
    inner: B,
    sleep: Pin<Box<tokio::time::Sleep>>,
    bytes: u64,
    on_end: Option<Box<dyn FnOnce(u64, bool) + Send>>,
}

impl<B> fmt::Debug for Deadline<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deadline").field("bytes", &self.bytes).finish_non_exhaustive()
    }
}

impl<B> Deadline<B> {
    pub fn new(inner: B, deadline: tokio::time::Instant, on_end: impl FnOnce(u64, bool) + Send + 'static) -> Self {
        Self { inner, sleep: Box::pin(tokio::time::sleep_until(deadline)), bytes: 0, on_end: Some(Box::new(on_end)) }
    }

    fn finish(&mut self, clean: bool) {
        if let Some(on_end) = self.on_end.take() {
            on_end(self.bytes, clean);
        }
    }
}

impl<B> Drop for Deadline<B> {
    fn drop(&mut self) {
        self.finish(false);
    }
}

/// The upstream took longer than the overall timeout.
#[derive(Debug, thiserror::Error)]
#[error("the provider did not finish answering in time")]
pub struct DeadlinePassed;

impl<B> Body for Deadline<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.finish(false);
            return Poll::Ready(Some(Err(Box::new(DeadlinePassed))));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.finish(false);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                self.finish(true);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body going upstream, counted, and cut off with an error once more than `limit`
/// bytes came through (the caller then answers 413).
pub struct Metered<B> {
    inner: B,
    limit: u64,
    /// Bytes that went through; shared with the caller for the audit row.
    pub sent: Arc<AtomicU64>,
    /// Set when the limit cut the body off.
    pub exceeded: Arc<AtomicBool>,
}

impl<B> fmt::Debug for Metered<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metered").field("limit", &self.limit).finish_non_exhaustive()
    }
}

impl<B> Metered<B> {
    pub fn new(inner: B, limit: u64, sent: Arc<AtomicU64>, exceeded: Arc<AtomicBool>) -> Self {
        Self { inner, limit, sent, exceeded }
    }
}

/// The request body was larger than the proxy's limit.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than the limit")]
pub struct BodyLimitExceeded;

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                let total = self.sent.fetch_add(len, Ordering::SeqCst) + len;
                if total > self.limit {
                    self.exceeded.store(true, Ordering::SeqCst);
                    return Poll::Ready(Some(Err(Box::new(BodyLimitExceeded))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
