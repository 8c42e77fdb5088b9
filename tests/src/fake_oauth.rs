//! A fake OAuth 2.0 provider for the integration tests: an authorization endpoint that consents
//! at once (or denies), a token endpoint for the authorization-code grant (checking PKCE S256,
//! the redirect URI and the client credentials) and the refresh-token grant with rotating refresh
//! tokens, and an RFC 7009 revocation endpoint. Counters and injectable failures let tests check
//! exactly how Custody talks to it, e.g. that a refresh token is never spent twice.
//!
//! It also serves a small API under `/api` (the provider's `api_base_url` is
//! [`FakeOAuth::api_base_url`]) for the proxy suites. Every API call needs `Authorization: Bearer`
//! with a live access token (else 401 `invalid_token`):
//!
//! - `GET /api/user`: `{"login", "id"}` of the account the token belongs to. The account is the
//!   `login` query parameter given to `/authorize` (default `fake-user`), `imported` for
//!   [`FakeOAuth::issue_tokens`].
//! - `/api/echo/...` (any method): what arrived: `method`, `path`, `query` (raw), `headers`
//!   (every header except `authorization`, names lower-cased), `body_bytes` (counted while
//!   streaming, never held) and `login`. The answer carries `X-Upstream: fake`, a `Set-Cookie`
//!   and a hop-by-hop `Keep-Alive` header, so tests can check which headers come back.
//! - `GET /api/large?bytes=N`: N bytes generated on the fly in 64 KiB chunks. With [`FakeOAuth::
//!   gate_large_bodies`] on, it sends the first chunk and waits for [`FakeOAuth::open_gate`]
//!   before the rest, so a test can prove the proxy streams instead of buffering.
//!
//! [`FakeOAuth::fail_next_api_calls`] makes the next calls answer 401 whatever the token,
//! [`FakeOAuth::stall_api`] makes them never answer.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// The response body of the fake provider: whole, or generated on the fly.
pub type FakeBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What the next token-endpoint calls should do instead of succeeding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// HTTP 500.
    ServerError,
    /// HTTP 400 `invalid_grant`.
    InvalidGrant,
}

#[derive(Debug)]
struct PendingCode {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    scope: String,
    login: String,
}

#[derive(Debug, Default)]
struct State {
    codes: HashMap<String, PendingCode>,
    /// Refresh tokens that can still be used.
    live_refresh: HashSet<String>,
    /// Refresh tokens already used once.
    spent_refresh: HashSet<String>,
    token_failures: Vec<Failure>,
    revoke_failures: usize,
    revoked: Vec<String>,
    deny_consent: bool,
    /// The account of every access and refresh token issued.
    accounts: HashMap<String, String>,
    /// Live access tokens.
    live_access: HashSet<String>,
    api_failures: usize,
    api_calls: usize,
}

/// The fake provider. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeOAuth {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    counters: Arc<Counters>,
    settings: Arc<Mutex<Settings>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Counters {
    code_exchanges: AtomicUsize,
    refresh_calls: AtomicUsize,
    refresh_reuse: AtomicUsize,
    revocation_calls: AtomicUsize,
    next_token: AtomicU64,
    stall_api: std::sync::atomic::AtomicBool,
    gate_large: std::sync::atomic::AtomicBool,
    gate: tokio::sync::Notify,
}

#[derive(Debug, Clone)]
struct Settings {
    client_id: String,
    client_secret: String,
    expires_in: i64,
    refresh_delay: Duration,
    rotate_refresh_tokens: bool,
}

impl Drop for FakeOAuth {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The client id the fake provider accepts.
pub const CLIENT_ID: &str = "fake-client";
/// The client secret the fake provider accepts.
pub const CLIENT_SECRET: &str = "fake-client-secret-not-for-production";

impl FakeOAuth {
    /// Starts the provider on 127.0.0.1 with an ephemeral port.
    pub async fn start() -> FakeOAuth {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake oauth");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State::default()));
        let counters = Arc::new(Counters::default());
        let settings = Arc::new(Mutex::new(Settings {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            expires_in: 3600,
            refresh_delay: Duration::ZERO,
            rotate_refresh_tokens: true,
        }));
        let (s, c, st) = (state.clone(), counters.clone(), settings.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (s, c, st) = (s.clone(), c.clone(), st.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let (s, c, st) = (s.clone(), c.clone(), st.clone());
                        async move { Ok::<_, Infallible>(handle(req, s, c, st).await) }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        FakeOAuth { addr, state, counters, settings, task }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn authorization_url(&self) -> String {
        format!("{}/authorize", self.base_url())
    }
    pub fn token_url(&self) -> String {
        format!("{}/token", self.base_url())
    }
    pub fn revocation_url(&self) -> String {
        format!("{}/revoke", self.base_url())
    }

    /// The provider body for `PUT /v1/apps/{app}/providers/{name}`.
    pub fn provider_body(&self, scopes: &[&str]) -> serde_json::Value {
        json!({
            "authorization_url": self.authorization_url(),
            "token_url": self.token_url(),
            "revocation_url": self.revocation_url(),
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "scopes": scopes,
        })
    }

    /// Access tokens issued from now on expire after `secs`.
    pub fn set_expires_in(&self, secs: i64) {
        self.settings.lock().unwrap().expires_in = secs;
    }
    /// Refresh answers are delayed by `delay` (to widen race windows in concurrency tests).
    pub fn set_refresh_delay(&self, delay: Duration) {
        self.settings.lock().unwrap().refresh_delay = delay;
    }
    /// Whether a refresh returns a new refresh token (default) or none.
    pub fn set_rotate_refresh_tokens(&self, rotate: bool) {
        self.settings.lock().unwrap().rotate_refresh_tokens = rotate;
    }
    /// The next token-endpoint calls fail as listed, in order.
    pub fn fail_next_token_calls(&self, failures: &[Failure]) {
        self.state.lock().unwrap().token_failures.extend_from_slice(failures);
    }
    /// The next `n` revocation calls answer 503.
    pub fn fail_next_revocations(&self, n: usize) {
        self.state.lock().unwrap().revoke_failures += n;
    }
    /// The authorization endpoint answers `error=access_denied`.
    pub fn deny_consent(&self, deny: bool) {
        self.state.lock().unwrap().deny_consent = deny;
    }

    pub fn code_exchanges(&self) -> usize {
        self.counters.code_exchanges.load(Ordering::SeqCst)
    }
    /// Refresh-grant calls, successful or not.
    pub fn refresh_calls(&self) -> usize {
        self.counters.refresh_calls.load(Ordering::SeqCst)
    }
    /// Refresh calls that presented an already-spent refresh token.
    pub fn refresh_reuse(&self) -> usize {
        self.counters.refresh_reuse.load(Ordering::SeqCst)
    }
    pub fn revocation_calls(&self) -> usize {
        self.counters.revocation_calls.load(Ordering::SeqCst)
    }
    /// Tokens successfully revoked, in order.
    pub fn revoked_tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().revoked.clone()
    }
    /// Makes every live refresh token unusable (as if the user revoked access at the provider).
    pub fn invalidate_refresh_tokens(&self) {
        let mut s = self.state.lock().unwrap();
        let live: Vec<String> = s.live_refresh.drain().collect();
        s.spent_refresh.extend(live);
    }

    /// Issues a token pair directly (for imports); both are live, for account `imported`.
    pub fn issue_tokens(&self) -> (String, String) {
        let n = self.counters.next_token.fetch_add(1, Ordering::SeqCst);
        let (access, refresh) = (format!("fake-access-{n}"), format!("fake-refresh-{n}"));
        let mut s = self.state.lock().unwrap();
        s.live_refresh.insert(refresh.clone());
        s.live_access.insert(access.clone());
        s.accounts.insert(access.clone(), "imported".into());
        s.accounts.insert(refresh.clone(), "imported".into());
        (access, refresh)
    }

    /// The base URL of the provider's API (`api_base_url` of the provider).
    pub fn api_base_url(&self) -> String {
        format!("{}/api", self.base_url())
    }
    /// The next `n` API calls answer 401, whatever the token (as after a revocation the
    /// expiry did not show).
    pub fn fail_next_api_calls(&self, n: usize) {
        self.state.lock().unwrap().api_failures += n;
    }
    /// API calls from now on never answer (`true`), or answer again.
    pub fn stall_api(&self, stall: bool) {
        self.counters.stall_api.store(stall, Ordering::SeqCst);
    }
    /// `/api/large` waits after its first chunk until [`FakeOAuth::open_gate`].
    pub fn gate_large_bodies(&self, gate: bool) {
        self.counters.gate_large.store(gate, Ordering::SeqCst);
    }
    /// Lets a waiting `/api/large` body go on.
    pub fn open_gate(&self) {
        self.counters.gate.notify_one();
    }
    /// API calls that arrived (answered or not).
    pub fn api_calls(&self) -> usize {
        self.state.lock().unwrap().api_calls
    }
    /// Makes every access token unusable at the API (as if it expired early).
    pub fn invalidate_access_tokens(&self) {
        self.state.lock().unwrap().live_access.clear();
    }
}

fn respond(status: StatusCode, body: serde_json::Value) -> Response<FakeBody> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
    r
}

fn redirect(location: &str) -> Response<FakeBody> {
    let mut r = Response::new(Full::new(Bytes::new()).boxed());
    *r.status_mut() = StatusCode::FOUND;
    r.headers_mut().insert("location", location.parse().unwrap());
    r
}

fn oauth_error(code: &str) -> Response<FakeBody> {
    respond(StatusCode::BAD_REQUEST, json!({"error": code}))
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    counters: Arc<Counters>,
    settings: Arc<Mutex<Settings>>,
) -> Response<FakeBody> {
    if req.uri().path().starts_with("/api/") {
        return api(req, state, counters).await;
    }
    let path = req.uri().path().to_owned();
    let query: HashMap<String, String> =
        req.uri().query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let settings = settings.lock().unwrap().clone();
    match path.as_str() {
        "/authorize" => {
            let Some(redirect_uri) = query.get("redirect_uri") else { return oauth_error("invalid_request") };
            let state_param = query.get("state").cloned().unwrap_or_default();
            let mut target = url::Url::parse(redirect_uri).unwrap();
            let ok = query.get("response_type").map(String::as_str) == Some("code")
                && query.get("client_id") == Some(&settings.client_id)
                && query.get("code_challenge_method").map(String::as_str) == Some("S256")
                && query.contains_key("code_challenge");
            if !ok {
                target.query_pairs_mut().append_pair("error", "invalid_request").append_pair("state", &state_param);
                return redirect(target.as_str());
            }
            let mut s = state.lock().unwrap();
            if s.deny_consent {
                target.query_pairs_mut().append_pair("error", "access_denied").append_pair("state", &state_param);
                return redirect(target.as_str());
            }
            let code = format!("code-{}", counters.next_token.fetch_add(1, Ordering::SeqCst));
            s.codes.insert(
                code.clone(),
                PendingCode {
                    client_id: settings.client_id.clone(),
                    redirect_uri: redirect_uri.clone(),
                    challenge: query["code_challenge"].clone(),
                    scope: query.get("scope").cloned().unwrap_or_default(),
                    login: query.get("login").cloned().unwrap_or_else(|| "fake-user".into()),
                },
            );
            target.query_pairs_mut().append_pair("code", &code).append_pair("state", &state_param);
            redirect(target.as_str())
        }
        "/token" => {
            if form.get("client_id") != Some(&settings.client_id)
                || form.get("client_secret") != Some(&settings.client_secret)
            {
                return respond(StatusCode::UNAUTHORIZED, json!({"error": "invalid_client"}));
            }
            let grant_type = form.get("grant_type").cloned().unwrap_or_default();
            if grant_type == "refresh_token" {
                counters.refresh_calls.fetch_add(1, Ordering::SeqCst);
                if !settings.refresh_delay.is_zero() {
                    tokio::time::sleep(settings.refresh_delay).await;
                }
            } else {
                counters.code_exchanges.fetch_add(1, Ordering::SeqCst);
            }
            let mut s = state.lock().unwrap();
            if !s.token_failures.is_empty() {
                return match s.token_failures.remove(0) {
                    Failure::ServerError => {
                        respond(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": "server_error"}))
                    }
                    Failure::InvalidGrant => oauth_error("invalid_grant"),
                };
            }
            let n = counters.next_token.fetch_add(1, Ordering::SeqCst);
            let access = format!("fake-access-{n}");
            match grant_type.as_str() {
                "authorization_code" => {
                    let Some(pending) = form.get("code").and_then(|c| s.codes.remove(c)) else {
                        return oauth_error("invalid_grant");
                    };
                    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
                    let challenge = URL_SAFE_NO_PAD.encode(openssl::sha::sha256(verifier.as_bytes()));
                    if challenge != pending.challenge
                        || form.get("redirect_uri") != Some(&pending.redirect_uri)
                        || pending.client_id != settings.client_id
                    {
                        return oauth_error("invalid_grant");
                    }
                    let refresh = format!("fake-refresh-{n}");
                    s.live_refresh.insert(refresh.clone());
                    s.live_access.insert(access.clone());
                    s.accounts.insert(access.clone(), pending.login.clone());
                    s.accounts.insert(refresh.clone(), pending.login);
                    respond(
                        StatusCode::OK,
                        json!({"access_token": access, "token_type": "Bearer", "expires_in": settings.expires_in,
                               "refresh_token": refresh, "scope": pending.scope}),
                    )
                }
                "refresh_token" => {
                    let presented = form.get("refresh_token").cloned().unwrap_or_default();
                    if s.spent_refresh.contains(&presented) {
                        counters.refresh_reuse.fetch_add(1, Ordering::SeqCst);
                        return oauth_error("invalid_grant");
                    }
                    if !s.live_refresh.contains(&presented) {
                        return oauth_error("invalid_grant");
                    }
                    let mut body =
                        json!({"access_token": access, "token_type": "Bearer", "expires_in": settings.expires_in});
                    let login = s.accounts.get(&presented).cloned().unwrap_or_else(|| "fake-user".into());
                    s.live_access.insert(access.clone());
                    s.accounts.insert(access.clone(), login.clone());
                    s.accounts.insert(format!("fake-refresh-{n}"), login);
                    if settings.rotate_refresh_tokens {
                        s.live_refresh.remove(&presented);
                        s.spent_refresh.insert(presented);
                        let refresh = format!("fake-refresh-{n}");
                        s.live_refresh.insert(refresh.clone());
                        body["refresh_token"] = json!(refresh);
                    }
                    respond(StatusCode::OK, body)
                }
                _ => oauth_error("unsupported_grant_type"),
            }
        }
        "/revoke" => {
            counters.revocation_calls.fetch_add(1, Ordering::SeqCst);
            if form.get("client_id") != Some(&settings.client_id)
                || form.get("client_secret") != Some(&settings.client_secret)
            {
                return respond(StatusCode::UNAUTHORIZED, json!({"error": "invalid_client"}));
            }
            let mut s = state.lock().unwrap();
            if s.revoke_failures > 0 {
                s.revoke_failures -= 1;
                return respond(StatusCode::SERVICE_UNAVAILABLE, json!({"error": "temporarily_unavailable"}));
            }
            if let Some(token) = form.get("token") {
                s.live_refresh.remove(token);
                s.live_access.remove(token);
                s.revoked.push(token.clone());
            }
            respond(StatusCode::OK, json!({}))
        }
        _ => respond(StatusCode::NOT_FOUND, json!({"error": "not_found"})),
    }
}

/// The provider's API (see the module documentation).
async fn api(req: Request<Incoming>, state: Arc<Mutex<State>>, counters: Arc<Counters>) -> Response<FakeBody> {
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let login = {
        let mut s = state.lock().unwrap();
        s.api_calls += 1;
        if s.api_failures > 0 {
            s.api_failures -= 1;
            None
        } else {
            s.live_access.contains(&bearer).then(|| s.accounts.get(&bearer).cloned().unwrap_or_default())
        }
    };
    if counters.stall_api.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let Some(login) = login else {
        let mut r = respond(StatusCode::UNAUTHORIZED, json!({"error": "invalid_token"}));
        r.headers_mut().insert("www-authenticate", "Bearer error=\"invalid_token\"".parse().unwrap());
        return r;
    };
    let path = req.uri().path().to_owned();
    let raw_query = req.uri().query().unwrap_or_default().to_owned();
    if path == "/api/user" {
        return respond(StatusCode::OK, json!({"login": login, "id": format!("id-{login}")}));
    }
    if path == "/api/large" {
        let bytes = url::form_urlencoded::parse(raw_query.as_bytes())
            .find(|(k, _)| k == "bytes")
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .unwrap_or(0);
        let gated = counters.gate_large.load(Ordering::SeqCst);
        let mut r = Response::new(generated_body(bytes, gated, counters).boxed());
        r.headers_mut().insert("content-type", "application/octet-stream".parse().unwrap());
        return r;
    }
    if let Some(rest) = path.strip_prefix("/api/echo") {
        let method = req.method().to_string();
        let headers: serde_json::Map<String, serde_json::Value> = req
            .headers()
            .iter()
            .filter(|(name, _)| *name != "authorization")
            .map(|(name, value)| (name.as_str().to_owned(), json!(value.to_str().unwrap_or_default())))
            .collect();
        let mut body = req.into_body();
        let mut body_bytes = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => body_bytes += frame.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => return respond(StatusCode::BAD_REQUEST, json!({"error": "body_aborted"})),
            }
        }
        let mut r = respond(
            StatusCode::OK,
            json!({"method": method, "path": rest, "query": raw_query, "headers": headers,
                   "body_bytes": body_bytes, "login": login}),
        );
        r.headers_mut().insert("x-upstream", "fake".parse().unwrap());
        r.headers_mut().insert("set-cookie", "provider_session=secret; Path=/".parse().unwrap());
        r.headers_mut().insert("keep-alive", "timeout=5".parse().unwrap());
        return r;
    }
    respond(StatusCode::NOT_FOUND, json!({"error": "not_found"}))
}

/// A body fed by a task through a channel of one chunk: what the task has not sent yet does not
/// exist anywhere.
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|chunk| chunk.map(|c| Ok(hyper::body::Frame::data(c))))
    }
}

/// `bytes` bytes made on the fly, 64 KiB at a time; when `gated`, the generator waits after the
/// first chunk until the test opens the gate.
fn generated_body(bytes: u64, gated: bool, counters: Arc<Counters>) -> ChannelBody {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        let mut remaining = bytes;
        let mut first = true;
        while remaining > 0 {
            let n = remaining.min(64 * 1024);
            remaining -= n;
            if tx.send(Bytes::from(vec![b'x'; n as usize])).await.is_err() {
                return;
            }
            if first && gated {
                counters.gate.notified().await;
            }
            first = false;
        }
    });
    ChannelBody { rx }
}
