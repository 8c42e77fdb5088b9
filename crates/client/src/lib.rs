//! A typed async client of Custody's HTTP API: the operator (admin) resources — apps, API keys,
//! the identity provider with its OIDC client and webhooks, providers, policies, users, grants and
//! the audit log — and the runtime calls an app's backend makes (`me`, `token`, `grants`).
//!
//! Every call answers the resource's typed shape ([`types`]) or an [`Error`] that carries the
//! RFC 9457 problem's HTTP status, stable `code`, human `detail` and the request id. Lists follow
//! `next_cursor` until the last page.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use custody_client::Client;
//!
//! let client = Client::new("http://127.0.0.1:8080", "my-admin-token")?;
//! let app = client.create_app("Billing").await?;
//! // The API key is in this answer only: keep it in your secret store, never in a log.
//! std::fs::write("billing-api-key", &app.api_key)?;
//! println!("app {} created; its API key is in ./billing-api-key", app.id);
//! for app in client.list_apps().await? {
//!     println!("{} {}", app.id, app.name);
//! }
//! # Ok(()) }
//! ```
//!
//! The raw layer ([`Client::send`], [`Client::list_all`]) is public as well: it answers any
//! deserialisable type, e.g. [`serde_json::Value`] when the caller needs the API's JSON exactly as
//! it was sent (the `custody` command line's `--output json`).

pub mod types;

mod error;
pub mod resources;

pub use error::Error;
pub use reqwest::Method;
pub use resources::paths;
pub use types::*;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::fmt;

/// Characters left as they are in a path segment; everything else is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Percent-encodes one path segment (an id or a provider name).
pub fn segment(value: &str) -> String {
    utf8_percent_encode(value, SEGMENT).to_string()
}

/// A client of one Custody server with one credential: the admin token for operator calls, or an
/// app's API key for runtime calls. Cloning is cheap and shares the connection pool.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    page_size: u16,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token.
        f.debug_struct("Client").field("base", &self.base).finish_non_exhaustive()
    }
}

/// The page shape of every list: `{"items": [...], "next_cursor": ...}`.
#[derive(Debug, Clone, serde::Deserialize)]
struct Page<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

impl Client {
    /// A client of the server at `base_url` (`http://127.0.0.1:8080`, `https://custody.example.com`)
    /// sending `Authorization: Bearer <token>`.
    ///
    /// ```
    /// let client = custody_client::Client::new("http://127.0.0.1:8080/", "token").unwrap();
    /// assert_eq!(client.base_url(), "http://127.0.0.1:8080");
    /// ```
    pub fn new(base_url: &str, token: &str) -> Result<Client, Error> {
        let base = base_url.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base).map_err(|e| Error::InvalidUrl(format!("{base}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::InvalidUrl(format!("{base}: the scheme must be http or https")));
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("custody-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Connect(e.to_string()))?;
        Ok(Client { http, base, token: token.to_owned(), page_size: 1000 })
    }

    /// The page size [`Client::list_all`] asks for (1–1000, default 1000, the API's maximum).
    pub fn with_page_size(mut self, size: u16) -> Client {
        self.page_size = size.clamp(1, 1000);
        self
    }

    /// The server's base URL without a terminating `/`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Sends one request (`path` starts with `/`, query included) with an optional JSON body and
    /// decodes the answer. An empty answer (204) decodes as `null`, so `T = ()` or
    /// `T = Value` fit it.
    ///
    /// ```no_run
    /// # async fn example(client: custody_client::Client) -> Result<(), custody_client::Error> {
    /// use custody_client::Method;
    /// let app: serde_json::Value = client.send(Method::GET, "/v1/apps/0b8c…", None::<&()>).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, Error> {
        self.send_with(method, path, body, None).await
    }

    /// As [`Client::send`], with an `X-User-Token` header (runtime calls made for a user).
    pub async fn send_with<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        user_token: Option<&str>,
    ) -> Result<T, Error> {
        let url = format!("{}{}", self.base, path);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(token) = user_token {
            request = request.header("x-user-token", token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| Error::Connect(connect_reason(&self.base, &e)))?;
        let status = response.status();
        let request_id = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(ToOwned::to_owned);
        let bytes = response.bytes().await.map_err(|e| Error::Connect(connect_reason(&self.base, &e)))?;
        if !status.is_success() {
            return Err(Error::from_problem(status.as_u16(), &bytes, request_id));
        }
        let text: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(text).map_err(|e| Error::Decode { reason: e.to_string(), request_id })
    }

    /// Reads every page of a list (`path` may carry a query; `cursor` is added), in the server's
    /// order.
    pub async fn list_all<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, Error> {
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        let limit = self.page_size;
        loop {
            let page_path = match &cursor {
                None => format!("{path}{separator}limit={limit}"),
                Some(c) => format!("{path}{separator}limit={limit}&cursor={}", segment(c)),
            };
            let page: Page<T> = self.send(Method::GET, &page_path, None::<&()>).await?;
            items.extend(page.items);
            match page.next_cursor {
                Some(next) if !next.is_empty() => cursor = Some(next),
                _ => return Ok(items),
            }
        }
    }

    /// `GET /healthz`: whether the server answers.
    pub async fn health(&self) -> Result<(), Error> {
        let _: Value = self.send(Method::GET, "/healthz", None::<&()>).await.or_else(|e| match e {
            // /healthz answers plain text, which is fine.
            Error::Decode { .. } => Ok(Value::Null),
            other => Err(other),
        })?;
        Ok(())
    }
}

/// A connection failure's reason, naming the server (and never the token, which is not in it).
fn connect_reason(base: &str, e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut reason = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        reason = format!("{reason}: {s}");
        source = s.source();
    }
    format!("cannot reach {base}: {reason}")
}

/// Builds a query string from the pairs whose value is set (`?a=1&b=2`, or empty).
pub fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs.iter().filter_map(|(k, v)| v.map(|v| format!("{k}={}", segment(v)))).collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_queries_are_encoded() {
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
        assert_eq!(segment("github_2-x.y"), "github_2-x.y");
        assert_eq!(
            query(&[("status", Some("active")), ("provider", None), ("user_id", Some("a&b"))]),
            "?status=active&user_id=a%26b"
        );
        assert_eq!(query(&[("status", None)]), "");
    }

    #[test]
    fn only_http_urls_are_accepted() {
        assert!(Client::new("ftp://x", "t").is_err());
        assert!(Client::new("not a url", "t").is_err());
        assert!(Client::new("https://custody.example.com", "t").is_ok());
    }
}
