//! The fake IdP's sign-in endpoints (OpenID Connect authorization code flow with PKCE):
//!
//! - `GET /authorize`: checks the request (registered client and redirect URI, `response_type`
//!   `code`, `openid` in the scope, an S256 code challenge) and shows a login form: an HTML form
//!   with a labelled username field, a "Sign in" and a "Cancel" button, posting back.
//! - `POST /authorize`: issues a single-use code for the username and redirects to
//!   `redirect_uri` with `code` and `state` (or `error=access_denied` when cancelled).
//! - `POST /token`: the code exchange. Authenticates the client with `client_secret_basic` or
//!   `client_secret_post`, checks the code (single use, same client, same `redirect_uri`) and
//!   the PKCE verifier, and returns an ID token signed with the current RS256 key: `iss`,
//!   `sub` (the username), `aud` (the client id), `nonce`, `iat`, `exp`, `email`, `name`, plus
//!   any claims set for the username.
//! - `GET /logout`: the end-session endpoint; redirects to a registered
//!   `post_logout_redirect_uri` with `state`.
//!
//! The endpoints are served always and advertised in discovery once a test calls
//! [`FakeIdp::advertise_sign_in`] (other suites expect a document without them). Faults
//! ([`SignInFault`]) make the token endpoint fail or hand out ID tokens Custody must refuse.

use super::{b64, generate_key, json_response, now, respond, sign_with, Alg, FakeIdp, Shared};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::HeaderMap;
use hyper::{Response, StatusCode};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// A client registered at the fake IdP.
#[derive(Debug, Clone)]
struct Client {
    client_id: String,
    client_secret: String,
    redirect_uris: Vec<String>,
    post_logout_redirect_uris: Vec<String>,
}

/// An authorization code waiting to be exchanged.
#[derive(Debug, Clone)]
struct IssuedCode {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    nonce: Option<String>,
    username: String,
}

/// How the fake IdP misbehaves in the sign-in flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SignInFault {
    /// Everything works.
    #[default]
    None,
    /// The token endpoint answers HTTP 500.
    TokenServerError,
    /// The token endpoint refuses every code with `invalid_grant`.
    RejectCode,
    /// The token response carries no `id_token`.
    NoIdToken,
    /// The ID token carries a nonce other than the one sent.
    WrongNonce,
    /// The ID token names another audience than the client.
    WrongAudience,
    /// The ID token expired ten minutes ago.
    ExpiredIdToken,
    /// The ID token is signed with a key the JWKS does not publish.
    UnpublishedKey,
}

/// How a client authenticated at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Basic,
    Post,
    None,
}

/// One call to the token endpoint, as the fake IdP saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub client_auth: ClientAuth,
    /// The HTTP status answered.
    pub status: u16,
    /// The OAuth error answered, if any.
    pub error: Option<String>,
}

/// One call to the end-session endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    /// The query parameters, as sent.
    pub params: HashMap<String, String>,
}

/// The sign-in part of the fake IdP's state.
#[derive(Debug, Default)]
pub(super) struct SignInState {
    clients: Vec<Client>,
    codes: HashMap<String, IssuedCode>,
    fault: SignInFault,
    /// Extra ID-token claims per username.
    claims: HashMap<String, Map<String, Value>>,
    token_requests: Vec<TokenRequest>,
    logout_requests: Vec<LogoutRequest>,
}

fn random_string() -> String {
    let mut bytes = [0u8; 24];
    openssl::rand::rand_bytes(&mut bytes).expect("random bytes");
    b64(&bytes)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn html(status: StatusCode, title: &str, body: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        "text/html; charset=utf-8",
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>{}</title></head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n",
            escape(title)
        ),
    )
}

fn redirect(location: &str) -> Response<Full<Bytes>> {
    let mut response = respond(StatusCode::FOUND, "text/plain", "");
    if let Ok(v) = location.parse() {
        response.headers_mut().insert(hyper::header::LOCATION, v);
    }
    response
}

/// `base` with `pairs` appended to its query.
fn with_query(base: &str, pairs: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(base).expect("a registered URL is absolute");
    url.query_pairs_mut().extend_pairs(pairs);
    url.into()
}

fn parse_pairs(raw: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw).into_owned().collect()
}

fn oauth_error(status: StatusCode, error: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        "application/json",
        json!({"error": error, "error_description": "refused by the fake IdP"}).to_string(),
    )
}

impl FakeIdp {
    /// The authorization endpoint, `<issuer>/authorize`.
    pub fn authorization_endpoint(&self) -> String {
        format!("{}/authorize", self.shared.base_url)
    }

    /// The token endpoint, `<issuer>/token`.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.shared.base_url)
    }

    /// The end-session endpoint, `<issuer>/logout`.
    pub fn end_session_endpoint(&self) -> String {
        format!("{}/logout", self.shared.base_url)
    }

    /// Advertises the authorization, token and end-session endpoints in discovery.
    pub fn advertise_sign_in(&self) {
        self.set_metadata("authorization_endpoint", json!(self.authorization_endpoint()));
        self.set_metadata("token_endpoint", json!(self.token_endpoint()));
        self.set_metadata("end_session_endpoint", json!(self.end_session_endpoint()));
    }

    /// Registers (or replaces) an OIDC client with its redirect URIs and post-logout redirect
    /// URIs; both are matched exactly, as real IdPs do.
    pub fn register_client(
        &self,
        client_id: &str,
        client_secret: &str,
        redirect_uris: &[&str],
        post_logout_redirect_uris: &[&str],
    ) {
        let mut state = self.state();
        state.sign_in.clients.retain(|c| c.client_id != client_id);
        state.sign_in.clients.push(Client {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            redirect_uris: redirect_uris.iter().map(|s| s.to_string()).collect(),
            post_logout_redirect_uris: post_logout_redirect_uris.iter().map(|s| s.to_string()).collect(),
        });
    }

    /// Chooses how the sign-in endpoints misbehave.
    pub fn set_sign_in_fault(&self, fault: SignInFault) {
        self.state().sign_in.fault = fault;
    }

    /// Extra claims for `username`'s ID tokens (e.g. `{"groups": ["eng"]}`), replacing the
    /// defaults of the same name.
    pub fn set_user_claims(&self, username: &str, claims: Value) {
        let claims = claims.as_object().cloned().unwrap_or_default();
        self.state().sign_in.claims.insert(username.to_owned(), claims);
    }

    /// The token endpoint calls so far.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.state().sign_in.token_requests.clone()
    }

    /// The end-session endpoint calls so far.
    pub fn logout_requests(&self) -> Vec<LogoutRequest> {
        self.state().sign_in.logout_requests.clone()
    }
}

/// `GET /authorize`: the login form, or an error.
pub(super) fn authorize_page(shared: &Shared, query: &[u8]) -> Response<Full<Bytes>> {
    let params = parse_pairs(query);
    let get = |name: &str| params.get(name).map(String::as_str).unwrap_or_default();
    let state = shared.state.lock().expect("fake IdP state");
    let Some(client) = state.sign_in.clients.iter().find(|c| c.client_id == get("client_id")) else {
        return html(StatusCode::BAD_REQUEST, "Unknown client", "<h1>Unknown client</h1>");
    };
    if !client.redirect_uris.iter().any(|u| u == get("redirect_uri")) {
        return html(StatusCode::BAD_REQUEST, "Bad redirect", "<h1>The redirect_uri is not registered</h1>");
    }
    let refuse = |error: &str| {
        let mut pairs = vec![("error", error)];
        if let Some(s) = params.get("state") {
            pairs.push(("state", s.as_str()));
        }
        redirect(&with_query(get("redirect_uri"), &pairs))
    };
    if get("response_type") != "code" {
        return refuse("unsupported_response_type");
    }
    if !get("scope").split(' ').any(|s| s == "openid") {
        return refuse("invalid_scope");
    }
    if get("code_challenge").is_empty() || get("code_challenge_method") != "S256" {
        return refuse("invalid_request");
    }
    let hidden: String = ["client_id", "redirect_uri", "state", "nonce", "code_challenge", "scope"]
        .iter()
        .map(|name| {
            format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
                escape(params.get(*name).map(String::as_str).unwrap_or_default())
            )
        })
        .collect();
    html(
        StatusCode::OK,
        "Sign in to the fake IdP",
        &format!(
            "<h1>Sign in to the fake identity provider</h1>\n\
             <form method=\"post\" action=\"/authorize\">\n{hidden}\
             <p><label for=\"username\">Username</label>\n\
             <input id=\"username\" name=\"username\" autocomplete=\"username\" required></p>\n\
             <p><button id=\"sign-in\" type=\"submit\" name=\"action\" value=\"sign-in\">Sign in</button>\n\
             <button id=\"cancel\" type=\"submit\" name=\"action\" value=\"cancel\" formnovalidate>Cancel</button></p>\n\
             </form>"
        ),
    )
}

/// `POST /authorize`: the login form submitted.
pub(super) fn authorize_submit(shared: &Shared, body: &[u8]) -> Response<Full<Bytes>> {
    let form = parse_pairs(body);
    let get = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    let mut state = shared.state.lock().expect("fake IdP state");
    let registered = state
        .sign_in
        .clients
        .iter()
        .any(|c| c.client_id == get("client_id") && c.redirect_uris.iter().any(|u| u == get("redirect_uri")));
    if !registered {
        return html(StatusCode::BAD_REQUEST, "Bad request", "<h1>Unknown client or redirect_uri</h1>");
    }
    if get("action") == "cancel" {
        return redirect(&with_query(get("redirect_uri"), &[("error", "access_denied"), ("state", get("state"))]));
    }
    let username = get("username").trim();
    if username.is_empty() {
        return html(StatusCode::BAD_REQUEST, "Username required", "<h1>A username is required</h1>");
    }
    let code = random_string();
    state.sign_in.codes.insert(
        code.clone(),
        IssuedCode {
            client_id: get("client_id").to_owned(),
            redirect_uri: get("redirect_uri").to_owned(),
            code_challenge: get("code_challenge").to_owned(),
            nonce: form.get("nonce").filter(|n| !n.is_empty()).cloned(),
            username: username.to_owned(),
        },
    );
    redirect(&with_query(get("redirect_uri"), &[("code", code.as_str()), ("state", get("state"))]))
}

/// The client credentials of a token request: HTTP Basic (RFC 6749 section 2.3.1: both parts
/// form-urlencoded) or the body.
fn client_credentials(headers: &HeaderMap, form: &HashMap<String, String>) -> (ClientAuth, String, String) {
    use base64::Engine as _;
    let basic = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v.trim()).ok())
        .and_then(|v| String::from_utf8(v).ok());
    if let Some(pair) = basic {
        if let Some((id, secret)) = pair.split_once(':') {
            let decode =
                |s: &str| url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
            return (ClientAuth::Basic, decode(id).unwrap_or_default(), decode(secret).unwrap_or_default());
        }
    }
    match (form.get("client_id"), form.get("client_secret")) {
        (Some(id), Some(secret)) => (ClientAuth::Post, id.clone(), secret.clone()),
        _ => (ClientAuth::None, String::new(), String::new()),
    }
}

/// `POST /token`: the code exchange.
pub(super) fn token(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response<Full<Bytes>> {
    let form = parse_pairs(body);
    let (client_auth, client_id, client_secret) = client_credentials(headers, &form);
    let mut state = shared.state.lock().expect("fake IdP state");
    let record = |state: &mut super::State, status: StatusCode, error: Option<&str>| {
        state.sign_in.token_requests.push(TokenRequest {
            client_auth,
            status: status.as_u16(),
            error: error.map(str::to_owned),
        });
    };
    let authenticated =
        state.sign_in.clients.iter().any(|c| c.client_id == client_id && c.client_secret == client_secret);
    if !authenticated {
        record(&mut state, StatusCode::UNAUTHORIZED, Some("invalid_client"));
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let fault = state.sign_in.fault;
    if fault == SignInFault::TokenServerError {
        record(&mut state, StatusCode::INTERNAL_SERVER_ERROR, None);
        return respond(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "token endpoint down");
    }
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        record(&mut state, StatusCode::BAD_REQUEST, Some("unsupported_grant_type"));
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    // A code is spent by its first exchange, whatever the outcome.
    let issued = form.get("code").and_then(|code| state.sign_in.codes.remove(code));
    let verifier = form.get("code_verifier").map(String::as_str).unwrap_or_default();
    let valid = issued.as_ref().is_some_and(|c| {
        c.client_id == client_id
            && Some(&c.redirect_uri) == form.get("redirect_uri")
            && b64(&openssl::sha::sha256(verifier.as_bytes())) == c.code_challenge
    });
    let (Some(issued), true, false) = (issued, valid, fault == SignInFault::RejectCode) else {
        record(&mut state, StatusCode::BAD_REQUEST, Some("invalid_grant"));
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    };
    let now = now();
    let mut claims = json!({
        "iss": shared.base_url,
        "sub": issued.username,
        "aud": issued.client_id,
        "iat": now,
        "auth_time": now,
        "exp": now + 300,
        "email": format!("{}@example.com", issued.username),
        "email_verified": true,
        "name": issued.username,
    });
    if let Some(nonce) = &issued.nonce {
        claims["nonce"] = json!(nonce);
    }
    if let Some(extra) = state.sign_in.claims.get(&issued.username) {
        for (name, value) in extra {
            claims[name] = value.clone();
        }
    }
    match fault {
        SignInFault::WrongNonce => claims["nonce"] = json!("not-the-nonce-that-was-sent"),
        SignInFault::WrongAudience => claims["aud"] = json!("some-other-client"),
        SignInFault::ExpiredIdToken => {
            claims["iat"] = json!(now - 900);
            claims["exp"] = json!(now - 600);
        }
        _ => {}
    }
    let id_token = if fault == SignInFault::UnpublishedKey {
        let key = generate_key(Alg::Rs256, format!("unpublished-{}", random_string()));
        sign_with(&key, &claims, Some(&key.kid))
    } else {
        let key = state.current(Alg::Rs256);
        sign_with(key, &claims, Some(&key.kid))
    };
    let mut answer = json!({
        "access_token": random_string(),
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "openid profile email",
    });
    if fault != SignInFault::NoIdToken {
        answer["id_token"] = json!(id_token);
    }
    record(&mut state, StatusCode::OK, None);
    let mut response = json_response(&answer);
    response.headers_mut().insert(hyper::header::CACHE_CONTROL, "no-store".parse().expect("header value"));
    response
}

/// `GET /logout`: the end-session endpoint.
pub(super) fn end_session(shared: &Shared, query: &[u8]) -> Response<Full<Bytes>> {
    let params = parse_pairs(query);
    let mut state = shared.state.lock().expect("fake IdP state");
    state.sign_in.logout_requests.push(LogoutRequest { params: params.clone() });
    let Some(target) = params.get("post_logout_redirect_uri") else {
        return html(StatusCode::OK, "Signed out", "<h1>You are signed out of the fake identity provider</h1>");
    };
    let registered = state.sign_in.clients.iter().any(|c| {
        params.get("client_id").is_none_or(|id| *id == c.client_id)
            && c.post_logout_redirect_uris.iter().any(|u| u == target)
    });
    if !registered {
        return html(
            StatusCode::BAD_REQUEST,
            "Bad logout request",
            "<h1>The post_logout_redirect_uri is not registered</h1>",
        );
    }
    match params.get("state") {
        Some(s) => redirect(&with_query(target, &[("state", s.as_str())])),
        None => redirect(target),
    }
}
