//! A fake OpenID Provider for the integration tests: a real HTTP server on `127.0.0.1` serving
//! `/.well-known/openid-configuration` and a JWKS, holding RS256, ES256 and EdDSA (Ed25519)
//! signing keys made with josekit, and signing tokens with them.
//!
//! Knobs let tests make it misbehave: a discovery document that lies about its issuer, answers
//! 500, is not JSON or lacks `jwks_uri`; a failing JWKS; a chosen `Cache-Control`; key rotation.
//! It also forges the tokens an attacker would send: `alg: none`, HS256 keyed with the RSA public
//! key, made-up key ids, keys that were never published. Counters tell how often Custody fetched
//! the discovery document and the JWKS.
//!
//! It also plays the IdP's part in sign-in ([`sign_in`]): an authorization endpoint with a login
//! form, a token endpoint for codes (PKCE, client authentication, ID tokens) and an end-session
//! endpoint, advertised in discovery after [`FakeIdp::advertise_sign_in`].
#![allow(clippy::expect_used)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use josekit::jws::{EdDSA, JwsSigner, ES256, HS256, RS256};
use serde_json::{json, Map, Value};
use std::collections::hash_map::RandomState;
use std::convert::Infallible;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;

pub mod sign_in;

pub use sign_in::{ClientAuth, LogoutRequest, SignInFault, TokenRequest};

/// The audience [`FakeIdp::token_for`] puts in its tokens.
pub const AUDIENCE: &str = "custody-tests";

/// The signature algorithms the fake IdP signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    Rs256,
    Es256,
    EdDsa,
}

impl Alg {
    /// All of them.
    pub const ALL: [Alg; 3] = [Alg::Rs256, Alg::Es256, Alg::EdDsa];

    /// The JWS `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Alg::Rs256 => "rsa",
            Alg::Es256 => "ec",
            Alg::EdDsa => "ed",
        }
    }
}

/// How the discovery endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryMode {
    /// A correct document.
    Normal,
    /// HTTP 500.
    ServerError,
    /// HTTP 200 with an HTML body.
    NotJson,
    /// A document without `jwks_uri`.
    MissingJwksUri,
}

/// A signing key, with its public JWK.
struct SigningKey {
    kid: String,
    alg: Alg,
    signer: Box<dyn JwsSigner>,
    public_jwk: Map<String, Value>,
    /// The public key in PEM, for forging HS256 tokens keyed with it.
    public_pem: Vec<u8>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

fn generate_key(alg: Alg, kid: String) -> SigningKey {
    let pair: Box<dyn josekit::jwk::KeyPair> = match alg {
        Alg::Rs256 => Box::new(RS256.generate_key_pair(2048).expect("RSA key generation")),
        Alg::Es256 => Box::new(ES256.generate_key_pair().expect("EC key generation")),
        Alg::EdDsa => Box::new(EdDSA.generate_key_pair(josekit::jwk::Ed25519).expect("Ed25519 key generation")),
    };
    let private = pair.to_jwk_private_key();
    let signer: Box<dyn JwsSigner> = match alg {
        Alg::Rs256 => Box::new(RS256.signer_from_jwk(&private).expect("RS256 signer")),
        Alg::Es256 => Box::new(ES256.signer_from_jwk(&private).expect("ES256 signer")),
        Alg::EdDsa => Box::new(EdDSA.signer_from_jwk(&private).expect("EdDSA signer")),
    };
    let mut public_jwk: Map<String, Value> = pair.to_jwk_public_key().into();
    public_jwk.insert("kid".into(), Value::String(kid.clone()));
    public_jwk.insert("use".into(), Value::String("sig".into()));
    public_jwk.insert("alg".into(), Value::String(alg.as_str().into()));
    SigningKey { kid, alg, signer, public_jwk, public_pem: pair.to_pem_public_key() }
}

#[derive(Debug)]
struct State {
    /// Published keys, oldest first; the newest of each algorithm signs.
    keys: Vec<SigningKey>,
    next_kid: usize,
    declared_issuer: Option<String>,
    discovery_mode: DiscoveryMode,
    /// Extra members merged into the discovery document (e.g. sign-in endpoints).
    metadata: Map<String, Value>,
    jwks_failing: bool,
    jwks_cache_control: Option<String>,
    /// Registered clients, issued codes, faults and call records of the sign-in endpoints.
    sign_in: sign_in::SignInState,
}

impl State {
    fn new_kid(&mut self, alg: Alg) -> String {
        self.next_kid += 1;
        format!("{}-{}", alg.prefix(), self.next_kid)
    }

    fn current(&self, alg: Alg) -> &SigningKey {
        self.keys.iter().rev().find(|k| k.alg == alg).expect("the fake IdP has a published key for every algorithm")
    }
}

#[derive(Debug, Default)]
struct Counters {
    discovery_fetches: AtomicUsize,
    jwks_fetches: AtomicUsize,
}

#[derive(Debug)]
struct Shared {
    base_url: String,
    state: Mutex<State>,
    counters: Counters,
    /// While `true`, JWKS requests hang (the connection stays open, no answer) until it is
    /// `false` again: the fault of an IdP that accepts connections and never answers.
    jwks_hang: tokio::sync::watch::Sender<bool>,
}

/// The fake OpenID Provider. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeIdp {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(now() as u64);
    hasher.finish()
}

/// `header.payload.signature` from a header object, claims and a signing function.
fn compact(header: Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

fn sign_with(key: &SigningKey, claims: &Value, kid: Option<&str>) -> String {
    let mut header = json!({"alg": key.alg.as_str(), "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = Value::String(kid.to_owned());
    }
    compact(header, claims, |input| key.signer.sign(input).expect("signing"))
}

impl FakeIdp {
    /// Starts the server on `127.0.0.1` with one key for each of RS256, ES256 and EdDSA.
    pub async fn start() -> FakeIdp {
        Self::start_on("127.0.0.1:0").await
    }

    /// As [`FakeIdp::start`], on a given address (`cargo xtask dev-idp` uses a fixed port).
    pub async fn start_on(addr: &str) -> FakeIdp {
        let listener = TcpListener::bind(addr).await.expect("bind the fake IdP");
        let addr = listener.local_addr().expect("local address");
        let mut state = State {
            keys: Vec::new(),
            next_kid: 0,
            declared_issuer: None,
            discovery_mode: DiscoveryMode::Normal,
            metadata: Map::new(),
            jwks_failing: false,
            jwks_cache_control: None,
            sign_in: sign_in::SignInState::default(),
        };
        for alg in Alg::ALL {
            let kid = state.new_kid(alg);
            state.keys.push(generate_key(alg, kid));
        }
        let shared = Arc::new(Shared {
            base_url: format!("http://{addr}"),
            state: Mutex::new(state),
            counters: Counters::default(),
            jwks_hang: tokio::sync::watch::Sender::new(false),
        });
        let accept_shared = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let shared = accept_shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(route(&shared, req).await) }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        FakeIdp { addr, shared, task }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().expect("fake IdP state")
    }

    /// The socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The issuer: the base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn issuer(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The discovery document's URL.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.shared.base_url)
    }

    /// The JWKS URL.
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.shared.base_url)
    }

    /// The audience [`FakeIdp::token_for`] uses.
    pub fn audience(&self) -> &'static str {
        AUDIENCE
    }

    /// Makes the discovery document declare `issuer` instead of the real one (`None` restores).
    pub fn set_declared_issuer(&self, issuer: Option<&str>) {
        self.state().declared_issuer = issuer.map(str::to_owned);
    }

    /// Chooses how the discovery endpoint answers.
    pub fn set_discovery_mode(&self, mode: DiscoveryMode) {
        self.state().discovery_mode = mode;
    }

    /// Adds (or with `Value::Null`, removes) a member of the discovery document, e.g.
    /// `authorization_endpoint` once a sign-in endpoint exists.
    pub fn set_metadata(&self, name: &str, value: Value) {
        let mut state = self.state();
        if value.is_null() {
            state.metadata.remove(name);
        } else {
            state.metadata.insert(name.to_owned(), value);
        }
    }

    /// Makes the JWKS endpoint answer 500 (still counted as a fetch).
    pub fn set_jwks_failing(&self, failing: bool) {
        self.state().jwks_failing = failing;
    }

    /// Makes JWKS requests hang (counted as fetches when they arrive, answered only once the
    /// hang is lifted, by which time Custody's HTTP client may have given up on them).
    pub fn set_jwks_hanging(&self, hanging: bool) {
        self.shared.jwks_hang.send_replace(hanging);
    }

    /// The `Cache-Control` header of JWKS responses (none by default).
    pub fn set_jwks_cache_control(&self, value: Option<&str>) {
        self.state().jwks_cache_control = value.map(str::to_owned);
    }

    /// How many times the discovery document was requested.
    pub fn discovery_fetches(&self) -> usize {
        self.shared.counters.discovery_fetches.load(Ordering::SeqCst)
    }

    /// How many times the JWKS was requested.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.counters.jwks_fetches.load(Ordering::SeqCst)
    }

    /// The kid of the key that currently signs `alg` tokens.
    pub fn current_kid(&self, alg: Alg) -> String {
        self.state().current(alg).kid.clone()
    }

    /// Publishes a new key for `alg`, which signs from now on; with `remove_old`, the previous
    /// keys of that algorithm leave the JWKS. Returns the new kid.
    pub fn rotate(&self, alg: Alg, remove_old: bool) -> String {
        let mut state = self.state();
        let kid = state.new_kid(alg);
        let key = generate_key(alg, kid.clone());
        if remove_old {
            state.keys.retain(|k| k.alg != alg);
        }
        state.keys.push(key);
        kid
    }

    /// The current public key for `alg`, as a JWK (for verifying outside Custody, e.g. benchmarks).
    pub fn public_jwk(&self, alg: Alg) -> josekit::jwk::Jwk {
        let state = self.state();
        josekit::jwk::Jwk::from_map(state.current(alg).public_jwk.clone()).expect("a valid public JWK")
    }

    /// Claims for `sub`: this issuer, [`AUDIENCE`], issued now, expiring in five minutes.
    pub fn claims_for(&self, sub: &str) -> Value {
        let now = now();
        json!({"iss": self.issuer(), "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300})
    }

    /// A token for `sub` ([`FakeIdp::claims_for`]) signed with the current RS256 key.
    pub fn token_for(&self, sub: &str) -> String {
        self.sign(self.claims_for(sub), Alg::Rs256)
    }

    /// `claims` signed with the current `alg` key, its kid in the header.
    pub fn sign(&self, claims: Value, alg: Alg) -> String {
        let state = self.state();
        let key = state.current(alg);
        sign_with(key, &claims, Some(&key.kid))
    }

    /// `claims` signed with the current `alg` key, but with `kid` in the header instead of the
    /// key's own (`None`: no kid at all).
    pub fn sign_with_kid(&self, claims: Value, alg: Alg, kid: Option<&str>) -> String {
        let state = self.state();
        sign_with(state.current(alg), &claims, kid)
    }

    /// `claims` signed with the current `alg` key under a made-up kid nobody publishes.
    pub fn sign_with_random_kid(&self, claims: Value, alg: Alg) -> String {
        let kid = format!("unknown-{:016x}", random_u64());
        self.sign_with_kid(claims, alg, Some(&kid))
    }

    /// `claims` signed with a fresh `alg` key that is never published, under a random kid.
    pub fn sign_with_unpublished_key(&self, claims: Value, alg: Alg) -> String {
        let key = generate_key(alg, format!("unpublished-{:016x}", random_u64()));
        sign_with(&key, &claims, Some(&key.kid))
    }

    /// An unsecured JWS (`alg: none`, empty signature) carrying `claims`.
    pub fn unsigned_token(&self, claims: Value) -> String {
        compact(json!({"alg": "none", "typ": "JWT"}), &claims, |_| Vec::new())
    }

    /// The key-confusion forgery: `claims` under HS256 whose HMAC key is the current RSA public
    /// key's PEM, with that key's kid in the header.
    pub fn hs256_with_public_key(&self, claims: Value) -> String {
        let state = self.state();
        let rsa = state.current(Alg::Rs256);
        let signer = HS256.signer_from_bytes(&rsa.public_pem).expect("HS256 signer");
        compact(json!({"alg": "HS256", "typ": "JWT", "kid": rsa.kid}), &claims, |input| {
            signer.sign(input).expect("HS256 signing")
        })
    }
}

/// The discovery document, as served in [`DiscoveryMode::Normal`].
fn discovery_document(shared: &Shared, state: &State) -> Value {
    let base = &shared.base_url;
    let mut doc = json!({
        "issuer": state.declared_issuer.clone().unwrap_or_else(|| base.clone()),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": Alg::ALL.map(Alg::as_str),
    });
    if let Value::Object(map) = &mut doc {
        for (name, value) in &state.metadata {
            map.insert(name.clone(), value.clone());
        }
        if state.discovery_mode == DiscoveryMode::MissingJwksUri {
            map.remove("jwks_uri");
        }
    }
    doc
}

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

fn json_response(value: &Value) -> Response<Full<Bytes>> {
    respond(StatusCode::OK, "application/json", value.to_string())
}

/// Routes a request.
async fn route(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let query = req.uri().query().unwrap_or_default().as_bytes().to_vec();
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/authorize") => return sign_in::authorize_page(shared, &query),
        (&Method::GET, "/logout") => return sign_in::end_session(shared, &query),
        (&Method::POST, "/authorize") | (&Method::POST, "/token") => {
            use http_body_util::BodyExt as _;
            let (parts, body) = req.into_parts();
            let Ok(collected) = http_body_util::Limited::new(body, 64 * 1024).collect().await else {
                return respond(StatusCode::BAD_REQUEST, "text/plain", "unreadable body");
            };
            let body = collected.to_bytes();
            return if parts.uri.path() == "/token" {
                sign_in::token(shared, &parts.headers, &body)
            } else {
                sign_in::authorize_submit(shared, &body)
            };
        }
        _ => {}
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/.well-known/openid-configuration") => {
            shared.counters.discovery_fetches.fetch_add(1, Ordering::SeqCst);
            let state = shared.state.lock().expect("fake IdP state");
            match state.discovery_mode {
                DiscoveryMode::ServerError => respond(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "boom"),
                DiscoveryMode::NotJson => respond(StatusCode::OK, "text/html", "<html><body>hello</body></html>"),
                DiscoveryMode::Normal | DiscoveryMode::MissingJwksUri => {
                    json_response(&discovery_document(shared, &state))
                }
            }
        }
        (&Method::GET, "/jwks") => {
            shared.counters.jwks_fetches.fetch_add(1, Ordering::SeqCst);
            let _ = shared.jwks_hang.subscribe().wait_for(|hanging| !*hanging).await;
            let state = shared.state.lock().expect("fake IdP state");
            if state.jwks_failing {
                return respond(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "jwks unavailable");
            }
            let keys: Vec<Value> = state.keys.iter().map(|k| Value::Object(k.public_jwk.clone())).collect();
            let mut response = json_response(&json!({ "keys": keys }));
            if let Some(value) = state.jwks_cache_control.as_deref().and_then(|v| v.parse().ok()) {
                response.headers_mut().insert(hyper::header::CACHE_CONTROL, value);
            }
            response
        }
        (&Method::GET, "/dev/token") => {
            // For trying Custody by hand: a fresh RS256 token for `?sub=` (and optional `email`,
            // `name`, comma-separated `groups` and `roles`), valid for an hour.
            let query: std::collections::HashMap<String, String> = req
                .uri()
                .query()
                .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default();
            let Some(sub) = query.get("sub").filter(|s| !s.is_empty()) else {
                return respond(StatusCode::BAD_REQUEST, "text/plain", "sub is required");
            };
            let now = now();
            let mut claims =
                json!({"iss": shared.base_url, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 3600});
            for name in ["email", "name"] {
                if let Some(v) = query.get(name) {
                    claims[name] = json!(v);
                }
            }
            for name in ["groups", "roles"] {
                if let Some(v) = query.get(name) {
                    claims[name] = json!(v.split(',').filter(|s| !s.is_empty()).collect::<Vec<_>>());
                }
            }
            let state = shared.state.lock().expect("fake IdP state");
            let key = state.current(Alg::Rs256);
            respond(StatusCode::OK, "text/plain", sign_with(key, &claims, Some(&key.kid)))
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found"),
    }
}
