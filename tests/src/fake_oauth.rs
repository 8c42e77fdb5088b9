//! A fake OAuth 2.0 provider for the integration tests: an authorization endpoint that consents
//! at once (or denies), a token endpoint for the authorization-code grant (checking PKCE S256,
//! the redirect URI and the client credentials) and the refresh-token grant with rotating refresh
//! tokens, and an RFC 7009 revocation endpoint. Counters and injectable failures let tests check
//! exactly how Custody talks to it, e.g. that a refresh token is never spent twice.

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

    /// Issues a token pair directly (for imports); the refresh token is live.
    pub fn issue_tokens(&self) -> (String, String) {
        let n = self.counters.next_token.fetch_add(1, Ordering::SeqCst);
        let (access, refresh) = (format!("fake-access-{n}"), format!("fake-refresh-{n}"));
        self.state.lock().unwrap().live_refresh.insert(refresh.clone());
        (access, refresh)
    }
}

fn respond(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
    r
}

fn redirect(location: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::FOUND;
    r.headers_mut().insert("location", location.parse().unwrap());
    r
}

fn oauth_error(code: &str) -> Response<Full<Bytes>> {
    respond(StatusCode::BAD_REQUEST, json!({"error": code}))
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    counters: Arc<Counters>,
    settings: Arc<Mutex<Settings>>,
) -> Response<Full<Bytes>> {
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
                s.revoked.push(token.clone());
            }
            respond(StatusCode::OK, json!({}))
        }
        _ => respond(StatusCode::NOT_FOUND, json!({"error": "not_found"})),
    }
}
