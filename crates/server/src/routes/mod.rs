//! Routing: maps a method and path to a handler through one table in which every route declares
//! who may call it ([`Access`]) and whether it reads a body ([`BodyUse`]). The router checks the
//! caller before a single body byte is read, so an unauthenticated client cannot make the server
//! buffer anything; bodies are then read within the [`BodyLimits`]. Handlers translate HTTP to
//! use-case calls and back; business rules live in the domain crates.

mod apps;
mod idp;
mod openapi;
mod ops;
mod proxy;
mod runtime;
mod signin;
mod vault;
mod wallet;
mod webhooks;

use crate::json::{problem_response, read_body, BodyLimits, BodyPermit, HttpResponse};
use crate::problem::ApiError;
use crate::state::AppState;
use bytes::Bytes;
use custody_identity::page::PageRequest;
use custody_identity::{ApiKeyRecord, AppId};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, COOKIE, TRANSFER_ENCODING};
use hyper::{HeaderMap, Method, Request, StatusCode};
use std::collections::HashMap;
use std::sync::Arc;

/// Who may call a route. The router enforces it before reading the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health, the API description, and the browser legs of flows whose single-use
    /// state authenticates them.
    Public,
    /// The operator, with the admin token.
    Operator,
    /// An app's backend, with one of its API keys; the end user's token (where the route needs
    /// one) is verified by the use case.
    App,
    /// As [`Access::App`], admitted against the API key's record as remembered from an earlier
    /// request (the store on a miss), for a handler whose use case confirms the key in its own
    /// single read (`POST /v1/token`, [`custody_vault::handout`]): a deleted key still fails
    /// at once, after its (bounded) body was read.
    AppConfirmedInUseCase,
    /// The app's identity provider delivering lifecycle events. The delivery is authenticated on
    /// its raw bytes by the use case, so the router reads the body only when the request carries
    /// credentials (`Authorization` or Svix signature headers).
    Webhook,
    /// A browser session: the named cookie must be present for the body to be read; the handler
    /// checks the session itself (and shows a signed-out page without one).
    Session(&'static str),
}

/// What a route does with the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyUse {
    /// Nothing: the body is never read (a body sent anyway ends the connection after the answer).
    None,
    /// Read whole, within the limits, after the caller was checked.
    Buffered,
    /// Handed to the handler unread, as a stream ([`Call::stream`]).
    Stream,
}

/// The caller of an [`Access::App`] route, as the router authenticated it: the API key and the
/// app's identity provider settings, read in one statement (or, for
/// [`Access::AppConfirmedInUseCase`], remembered).
pub type AppCaller = Arc<custody_vault::handout::HandoutCaller>;

/// A request after routing: its parts, the body (read in full for [`BodyUse::Buffered`]
/// routes), path parameters, the query, and the authenticated caller.
#[derive(Debug)]
pub struct Call {
    pub method: Method,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The unread body, for [`BodyUse::Stream`] routes.
    pub stream: Option<Incoming>,
    pub params: Vec<String>,
    pub query: HashMap<String, String>,
    /// The request target as received (the proxy forwards its raw path and query).
    pub uri: hyper::Uri,
    /// The client's address (the TCP peer; behind a reverse proxy, the proxy's).
    pub peer: Option<std::net::SocketAddr>,
    /// Set on [`Access::App`] routes.
    pub app: Option<AppCaller>,
    /// The share of the body budget `body` holds; released with the call.
    _body_permit: Option<BodyPermit>,
}

impl Call {
    /// The `n`th path parameter.
    pub fn param(&self, n: usize) -> &str {
        self.params.get(n).map(String::as_str).unwrap_or_default()
    }

    /// The `n`th path parameter as an app id; a malformed id is a 404 like an unknown one.
    pub fn app_id(&self, n: usize) -> Result<AppId, ApiError> {
        AppId::parse(self.param(n)).map_err(|_| ApiError::app_not_found())
    }

    /// The API key of an [`Access::App`] route's caller.
    pub fn app_key(&self) -> Result<&ApiKeyRecord, ApiError> {
        self.app.as_ref().map(|caller| &caller.key).ok_or_else(ApiError::unauthorized)
    }

    /// `?limit=&cursor=`.
    pub fn page(&self) -> Result<PageRequest, ApiError> {
        let limit = match self.query.get("limit") {
            None => None,
            Some(raw) => Some(
                raw.parse::<u32>()
                    .map_err(|_| ApiError::invalid_request("limit: expected a whole number from 1 to 1000"))?,
            ),
        };
        PageRequest::new(limit, self.query.get("cursor").filter(|c| !c.is_empty()).cloned())
            .map_err(|e| ApiError::invalid_request(format!("limit: {e}")))
    }
}

type Handler = fn(
    Arc<AppState>,
    Call,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<HttpResponse, ApiError>> + Send>>;

macro_rules! handler {
    ($f:path) => {
        (|state, call| Box::pin($f(state, call))) as Handler
    };
}

/// One row of the routing table.
struct Route {
    method: Method,
    template: &'static str,
    access: Access,
    body: BodyUse,
    handler: Handler,
}

fn routes() -> Vec<Route> {
    use Access::{App, AppConfirmedInUseCase, Operator, Public, Webhook};
    use BodyUse::{Buffered, None as NoBody};
    let r = |method: Method, template: &'static str, access: Access, body: BodyUse, handler: Handler| Route {
        method,
        template,
        access,
        body,
        handler,
    };
    let (get, post, put, patch, delete) = (Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE);
    const WALLET: Access = Access::Session(wallet::SESSION_COOKIE);
    const PORTAL: Access = Access::Session(crate::portal::SESSION_COOKIE);
    vec![
        r(get.clone(), "/", Public, NoBody, handler!(crate::portal::landing)),
        r(get.clone(), "/portal", Public, NoBody, handler!(crate::portal::home)),
        r(post.clone(), "/portal/sign-in", Public, Buffered, handler!(crate::portal::sign_in)),
        r(post.clone(), "/portal/sign-out", PORTAL, Buffered, handler!(crate::portal::sign_out)),
        r(get.clone(), "/portal/static/{file}", Public, NoBody, handler!(crate::portal::static_file)),
        r(get.clone(), "/portal/apps", Public, NoBody, handler!(crate::portal::apps_page)),
        r(post.clone(), "/portal/apps", PORTAL, Buffered, handler!(crate::portal::create_app)),
        r(get.clone(), "/portal/apps/{app_id}", Public, NoBody, handler!(crate::portal::app_page)),
        r(get.clone(), "/portal/apps/{app_id}/api-keys", Public, NoBody, handler!(crate::portal::api_keys_page)),
        r(post.clone(), "/portal/apps/{app_id}/api-keys", PORTAL, Buffered, handler!(crate::portal::create_api_key)),
        r(
            post.clone(),
            "/portal/apps/{app_id}/api-keys/{key_id}/delete",
            PORTAL,
            Buffered,
            handler!(crate::portal::delete_api_key),
        ),
        r(get.clone(), "/portal/apps/{app_id}/identity", Public, NoBody, handler!(crate::portal::identity_page)),
        r(post.clone(), "/portal/apps/{app_id}/identity", PORTAL, Buffered, handler!(crate::portal::add_provider)),
        r(post.clone(), "/portal/apps/{app_id}/identity/discover", PORTAL, Buffered, handler!(crate::portal::discover)),
        r(
            post.clone(),
            "/portal/apps/{app_id}/identity/mappings",
            PORTAL,
            Buffered,
            handler!(crate::portal::save_mappings),
        ),
        r(post.clone(), "/portal/apps/{app_id}/identity/remove", PORTAL, Buffered, handler!(crate::portal::remove_idp)),
        r(
            post.clone(),
            "/portal/apps/{app_id}/identity/refresh-keys",
            PORTAL,
            Buffered,
            handler!(crate::portal::refresh_keys),
        ),
        r(post.clone(), "/portal/apps/{app_id}/identity/oidc", PORTAL, Buffered, handler!(crate::portal::oidc_save)),
        r(
            post.clone(),
            "/portal/apps/{app_id}/identity/webhooks/enable",
            PORTAL,
            Buffered,
            handler!(crate::portal::webhooks_enable),
        ),
        r(
            post.clone(),
            "/portal/apps/{app_id}/identity/webhooks/rotate",
            PORTAL,
            Buffered,
            handler!(crate::portal::webhooks_rotate),
        ),
        r(
            post.clone(),
            "/portal/apps/{app_id}/identity/webhooks/disable",
            PORTAL,
            Buffered,
            handler!(crate::portal::webhooks_disable),
        ),
        r(get.clone(), "/portal/apps/{app_id}/users", Public, NoBody, handler!(crate::portal::users_page)),
        r(get.clone(), "/portal/apps/{app_id}/users/{user_id}", Public, NoBody, handler!(crate::portal::user_page)),
        r(
            post.clone(),
            "/portal/apps/{app_id}/users/{user_id}/deprovision",
            PORTAL,
            Buffered,
            handler!(crate::portal::deprovision),
        ),
        r(get.clone(), "/portal/apps/{app_id}/grants", Public, NoBody, handler!(crate::portal::grants_page)),
        r(
            post.clone(),
            "/portal/apps/{app_id}/grants/{grant_id}/revoke",
            PORTAL,
            Buffered,
            handler!(crate::portal::revoke_grant),
        ),
        r(get.clone(), "/portal/apps/{app_id}/providers", Public, NoBody, handler!(crate::portal::providers_page)),
        r(post.clone(), "/portal/apps/{app_id}/providers", PORTAL, Buffered, handler!(crate::portal::put_provider)),
        r(
            post.clone(),
            "/portal/apps/{app_id}/providers/{provider}/delete",
            PORTAL,
            Buffered,
            handler!(crate::portal::delete_provider),
        ),
        r(get.clone(), "/portal/apps/{app_id}/policies", Public, NoBody, handler!(crate::portal::policies_page)),
        r(post.clone(), "/portal/apps/{app_id}/policies", PORTAL, Buffered, handler!(crate::portal::put_policy)),
        r(
            post.clone(),
            "/portal/apps/{app_id}/policies/{provider}/delete",
            PORTAL,
            Buffered,
            handler!(crate::portal::delete_policy),
        ),
        r(get.clone(), "/portal/apps/{app_id}/audit", Public, NoBody, handler!(crate::portal::audit_page)),
        r(get.clone(), "/healthz", Public, NoBody, handler!(ops::healthz)),
        r(get.clone(), "/readyz", Public, NoBody, handler!(ops::readyz)),
        r(get.clone(), "/metrics", Public, NoBody, handler!(ops::metrics)),
        r(get.clone(), "/openapi.json", Public, NoBody, handler!(openapi::document)),
        r(post.clone(), "/v1/apps", Operator, Buffered, handler!(apps::create_app)),
        r(get.clone(), "/v1/apps", Operator, NoBody, handler!(apps::list_apps)),
        r(get.clone(), "/v1/apps/{app_id}", Operator, NoBody, handler!(apps::get_app)),
        r(delete.clone(), "/v1/apps/{app_id}", Operator, NoBody, handler!(apps::delete_app)),
        r(post.clone(), "/v1/apps/{app_id}/api-keys", Operator, Buffered, handler!(apps::create_api_key)),
        r(get.clone(), "/v1/apps/{app_id}/api-keys", Operator, NoBody, handler!(apps::list_api_keys)),
        r(delete.clone(), "/v1/apps/{app_id}/api-keys/{key_id}", Operator, NoBody, handler!(apps::delete_api_key)),
        r(get.clone(), "/v1/apps/{app_id}/users", Operator, NoBody, handler!(apps::list_users)),
        r(get.clone(), "/v1/apps/{app_id}/users/{user_id}", Operator, NoBody, handler!(apps::get_user)),
        r(
            post.clone(),
            "/v1/apps/{app_id}/users/{user_id}/deprovision",
            Operator,
            Buffered,
            handler!(apps::deprovision_user),
        ),
        r(get.clone(), "/v1/apps/{app_id}/audit", Operator, NoBody, handler!(apps::list_audit)),
        r(post.clone(), "/v1/apps/{app_id}/identity-provider/discover", Operator, Buffered, handler!(idp::discover)),
        r(post.clone(), "/v1/apps/{app_id}/identity-provider", Operator, Buffered, handler!(idp::create)),
        r(get.clone(), "/v1/apps/{app_id}/identity-provider", Operator, NoBody, handler!(idp::get)),
        r(patch.clone(), "/v1/apps/{app_id}/identity-provider", Operator, Buffered, handler!(idp::patch)),
        r(delete.clone(), "/v1/apps/{app_id}/identity-provider", Operator, NoBody, handler!(idp::delete)),
        r(
            post.clone(),
            "/v1/apps/{app_id}/identity-provider/jwks/refresh",
            Operator,
            NoBody,
            handler!(idp::refresh_jwks),
        ),
        r(
            get.clone(),
            "/v1/apps/{app_id}/identity-provider/webhook",
            Operator,
            NoBody,
            handler!(webhooks::get_settings),
        ),
        r(
            post.clone(),
            "/v1/apps/{app_id}/identity-provider/webhook/enable",
            Operator,
            Buffered,
            handler!(webhooks::enable),
        ),
        r(
            post.clone(),
            "/v1/apps/{app_id}/identity-provider/webhook/rotate",
            Operator,
            Buffered,
            handler!(webhooks::rotate),
        ),
        r(
            post.clone(),
            "/v1/apps/{app_id}/identity-provider/webhook/disable",
            Operator,
            Buffered,
            handler!(webhooks::disable),
        ),
        r(post.clone(), "/v1/webhooks/{app_id}", Webhook, Buffered, handler!(webhooks::receive)),
        r(get.clone(), "/v1/webhooks/{app_id}", Public, NoBody, handler!(webhooks::verify)),
        r(put.clone(), "/v1/apps/{app_id}/identity-provider/oidc", Operator, Buffered, handler!(signin::put_oidc)),
        r(delete.clone(), "/v1/apps/{app_id}/identity-provider/oidc", Operator, NoBody, handler!(signin::delete_oidc)),
        r(post.clone(), "/v1/auth/sessions", App, Buffered, handler!(signin::create_session)),
        r(get.clone(), "/v1/auth/sessions/{session_id}", App, NoBody, handler!(signin::get_session)),
        r(get.clone(), "/v1/auth/callback", Public, NoBody, handler!(signin::sdk_callback)),
        r(get.clone(), "/wallet", Public, NoBody, handler!(wallet::wallet_page)),
        r(get.clone(), "/wallet/sign-in", Public, NoBody, handler!(wallet::sign_in_page)),
        r(get.clone(), "/wallet/login", Public, NoBody, handler!(wallet::login)),
        r(get.clone(), "/wallet/auth/callback", Public, NoBody, handler!(wallet::callback)),
        r(post.clone(), "/wallet/grants/{grant_id}/revoke", WALLET, Buffered, handler!(wallet::revoke)),
        r(post.clone(), "/wallet/sign-out", WALLET, Buffered, handler!(wallet::sign_out)),
        r(get.clone(), "/v1/me", App, NoBody, handler!(runtime::me)),
        r(put.clone(), "/v1/apps/{app_id}/providers/{provider}", Operator, Buffered, handler!(vault::put_provider)),
        r(get.clone(), "/v1/apps/{app_id}/providers/{provider}", Operator, NoBody, handler!(vault::get_provider)),
        r(delete.clone(), "/v1/apps/{app_id}/providers/{provider}", Operator, NoBody, handler!(vault::delete_provider)),
        r(get.clone(), "/v1/apps/{app_id}/providers", Operator, NoBody, handler!(vault::list_providers)),
        r(put.clone(), "/v1/apps/{app_id}/policies/{provider}", Operator, Buffered, handler!(vault::put_policy)),
        r(get.clone(), "/v1/apps/{app_id}/policies/{provider}", Operator, NoBody, handler!(vault::get_policy)),
        r(delete.clone(), "/v1/apps/{app_id}/policies/{provider}", Operator, NoBody, handler!(vault::delete_policy)),
        r(get.clone(), "/v1/apps/{app_id}/policies", Operator, NoBody, handler!(vault::list_policies)),
        r(get.clone(), "/v1/apps/{app_id}/grants", Operator, NoBody, handler!(vault::list_app_grants)),
        r(post.clone(), "/v1/apps/{app_id}/grants", Operator, Buffered, handler!(vault::import_grant)),
        r(
            post.clone(),
            "/v1/apps/{app_id}/grants/{grant_id}/revoke",
            Operator,
            Buffered,
            handler!(vault::revoke_app_grant),
        ),
        r(post.clone(), "/v1/connect/sessions", App, Buffered, handler!(vault::create_connect_session)),
        r(get.clone(), "/v1/connect/start", Public, NoBody, handler!(vault::connect_start)),
        r(get.clone(), "/v1/connect/callback", Public, NoBody, handler!(vault::connect_callback)),
        r(get.clone(), "/v1/grants", App, NoBody, handler!(vault::list_my_grants)),
        r(delete.clone(), "/v1/grants/{grant_id}", App, NoBody, handler!(vault::revoke_my_grant)),
        r(post.clone(), "/v1/token", AppConfirmedInUseCase, Buffered, handler!(vault::token)),
        r(get, "/v1/proxy/{provider}/{*path}", App, NoBody, handler!(proxy::forward)),
        r(post, "/v1/proxy/{provider}/{*path}", App, BodyUse::Stream, handler!(proxy::forward)),
        r(put, "/v1/proxy/{provider}/{*path}", App, BodyUse::Stream, handler!(proxy::forward)),
        r(patch, "/v1/proxy/{provider}/{*path}", App, BodyUse::Stream, handler!(proxy::forward)),
        r(delete, "/v1/proxy/{provider}/{*path}", App, NoBody, handler!(proxy::forward)),
    ]
}

/// The route table, built once: one `matchit` tree per method.
pub struct Router {
    routes: Vec<Route>,
    by_method: HashMap<Method, matchit::Router<usize>>,
    limits: BodyLimits,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("routes", &self.routes.len()).finish()
    }
}

impl Default for Router {
    fn default() -> Self {
        Self::new(BodyLimits::default())
    }
}

/// What routing found for a method and path.
enum Matched<'a> {
    Route(&'a Route, Vec<String>),
    /// The path exists, but not with this method.
    MethodNotAllowed(Vec<&'a str>),
    NotFound,
}

fn percent_decode(s: &str) -> Option<String> {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes()).next().map(|(_, v)| v.into_owned())
}

impl Router {
    /// The table, reading request bodies within `limits`.
    ///
    /// # Panics
    /// When two routes of one method conflict: the table is static, so this fails every test.
    #[allow(clippy::expect_used)]
    pub fn new(limits: BodyLimits) -> Self {
        let routes = routes();
        let mut by_method: HashMap<Method, matchit::Router<usize>> = HashMap::new();
        for (i, route) in routes.iter().enumerate() {
            by_method
                .entry(route.method.clone())
                .or_default()
                .insert(route.template, i)
                .expect("the route table has no conflicting templates");
        }
        Self { routes, by_method, limits }
    }

    fn find(&self, method: &Method, path: &str) -> Matched<'_> {
        let lookup = |m: &Method| {
            let tree = self.by_method.get(m)?;
            let found = tree.at(path).ok()?;
            let route = self.routes.get(*found.value)?;
            let params = found.params.iter().map(|(_, v)| percent_decode(v)).collect::<Option<Vec<_>>>()?;
            if params.iter().any(String::is_empty) {
                return None;
            }
            Some((route, params))
        };
        if let Some((route, params)) = lookup(method) {
            return Matched::Route(route, params);
        }
        let mut allowed: Vec<&str> =
            self.by_method.keys().filter(|m| *m != method && lookup(m).is_some()).map(Method::as_str).collect();
        allowed.sort_unstable();
        if allowed.is_empty() {
            Matched::NotFound
        } else {
            Matched::MethodNotAllowed(allowed)
        }
    }

    /// The route templates, for documentation checks.
    pub fn templates(&self) -> Vec<(String, &'static str)> {
        self.routes.iter().map(|r| (r.method.to_string(), r.template)).collect()
    }

    /// Checks the caller a route declares. [`Admitted::WithoutBody`] when the handler answers
    /// without the body: a session route without its cookie (the signed-out page), a webhook
    /// delivery without credentials (refused).
    async fn admit(&self, state: &AppState, route: &Route, headers: &HeaderMap) -> Result<Admitted, ApiError> {
        match route.access {
            Access::Public => Ok(Admitted::Caller(None)),
            Access::Operator => match bearer(headers) {
                Some(token) if state.is_admin_token(token) => Ok(Admitted::Caller(None)),
                _ => Err(ApiError::unauthorized()),
            },
            Access::App => {
                let presented = bearer(headers).ok_or_else(ApiError::unauthorized)?;
                let (key, idp) = state.authenticate_api_key_with_idp(presented).await?;
                Ok(Admitted::Caller(Some(Arc::new(custody_vault::handout::HandoutCaller { key, idp }))))
            }
            Access::AppConfirmedInUseCase => {
                let presented = bearer(headers).ok_or_else(ApiError::unauthorized)?;
                Ok(Admitted::Caller(Some(state.admit_remembered_key(presented).await?)))
            }
            Access::Webhook => {
                // Without credentials the use case refuses the delivery whatever its bytes (and
                // answers an unknown app like a disabled one), so there is nothing to read.
                if headers.contains_key(AUTHORIZATION) || headers.contains_key("svix-signature") {
                    Ok(Admitted::Caller(None))
                } else {
                    Ok(Admitted::WithoutBody)
                }
            }
            Access::Session(cookie) => {
                if has_cookie(headers, cookie) {
                    Ok(Admitted::Caller(None))
                } else {
                    Ok(Admitted::WithoutBody)
                }
            }
        }
    }

    /// Answers one request. Returns the response and the route template for metrics.
    pub async fn handle(
        &self,
        state: Arc<AppState>,
        request: Request<Incoming>,
        peer: Option<std::net::SocketAddr>,
    ) -> (HttpResponse, &'static str) {
        let (parts, body) = request.into_parts();
        let (route, params) = match self.find(&parts.method, parts.uri.path()) {
            Matched::Route(route, params) => (route, params),
            Matched::MethodNotAllowed(allowed) => {
                let mut response = problem_response(&ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    format!("{} is not allowed here", parts.method),
                ));
                if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
                    response.headers_mut().insert(hyper::header::ALLOW, v);
                }
                return (no_store(response), "unmatched");
            }
            Matched::NotFound => {
                return (
                    no_store(problem_response(&ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint"))),
                    "unmatched",
                )
            }
        };
        let declares_body = declares_body(&parts.headers);
        let (result, body_read) = self.dispatch(state, route, params, parts, body, peer).await;
        let mut response = match result {
            Ok(response) => response,
            Err(e) => problem_response(&e),
        };
        if declares_body && !body_read {
            // The rest of the body was never read; draining it would let a client that stalls
            // mid-body hold the connection forever. Close it after this answer instead.
            response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
        }
        (no_store(response), route.template)
    }

    /// Admits the caller, reads the body as the route declares, and runs the handler. Also says
    /// whether the request body was consumed (read whole, or handed to a streaming handler).
    async fn dispatch(
        &self,
        state: Arc<AppState>,
        route: &Route,
        params: Vec<String>,
        parts: hyper::http::request::Parts,
        body: Incoming,
        peer: Option<std::net::SocketAddr>,
    ) -> (Result<HttpResponse, ApiError>, bool) {
        let (app, read) = match self.admit(&state, route, &parts.headers).await {
            Ok(Admitted::Caller(app)) => (app, true),
            Ok(Admitted::WithoutBody) => (None, false),
            Err(e) => return (Err(e), false),
        };
        let (body, stream, permit) = match route.body {
            BodyUse::Buffered if read => match read_body(body, parts.headers.get(CONTENT_LENGTH), &self.limits).await {
                Ok((bytes, permit)) => (bytes, None, permit),
                Err(e) => return (Err(e), false),
            },
            BodyUse::Stream if read => (Bytes::new(), Some(body), None),
            BodyUse::Buffered | BodyUse::Stream | BodyUse::None => (Bytes::new(), None, None),
        };
        let consumed = read && route.body != BodyUse::None;
        let query = parts
            .uri
            .query()
            .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let call = Call {
            method: parts.method,
            headers: parts.headers,
            body,
            stream,
            params,
            query,
            uri: parts.uri,
            peer,
            app,
            _body_permit: permit,
        };
        ((route.handler)(state, call).await, consumed)
    }
}

/// Whether the request says a body follows (a non-zero `Content-Length`, or chunked).
fn declares_body(headers: &HeaderMap) -> bool {
    headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|len| len > 0)
}

/// The outcome of checking a route's caller. A short-lived value on the stack, moved once: boxing
/// the large variant would cost an allocation on every hand-out for nothing.
#[allow(clippy::large_enum_variant)]
enum Admitted {
    /// Go on, with the app caller for [`Access::App`] routes.
    Caller(Option<AppCaller>),
    /// Go on without reading the body.
    WithoutBody,
}

/// Answers carry the caller's data (and some a secret shown once): no cache may keep them,
/// unless the handler chose otherwise.
fn no_store(mut response: HttpResponse) -> HttpResponse {
    if !response.headers().contains_key(CACHE_CONTROL) {
        response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Whether the request carries cookie `name` with a value.
fn has_cookie(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(n, v)| n == name && !v.trim().is_empty())
}

/// The bearer credential in `Authorization`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The end user's JWT from `X-User-Token`, or 401 `user_token_missing`.
pub fn user_token(call: &Call) -> Result<&str, ApiError> {
    call.headers.get("x-user-token").and_then(|v| v.to_str().ok()).map(str::trim).filter(|t| !t.is_empty()).ok_or_else(
        || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "user_token_missing",
                "the X-User-Token header with the user's JWT is required",
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_paths() {
        let router = Router::default();
        let params = |method: Method, path: &str| match router.find(&method, path) {
            Matched::Route(_, params) => Some(params),
            _ => None,
        };
        assert_eq!(params(Method::GET, "/v1/apps/abc"), Some(vec!["abc".to_string()]));
        assert_eq!(params(Method::GET, "/v1/apps/"), None);
        assert_eq!(params(Method::GET, "/v1/apps/a/b"), None);
        assert_eq!(params(Method::GET, "/v1/apps"), Some(vec![]));
        assert_eq!(
            params(Method::DELETE, "/v1/apps/1/providers/a%20b"),
            Some(vec!["1".to_string(), "a b".to_string()])
        );
        assert!(matches!(router.find(&Method::PUT, "/v1/apps"), Matched::MethodNotAllowed(m) if m == ["GET", "POST"]));
        assert!(matches!(router.find(&Method::GET, "/nope"), Matched::NotFound));
    }

    #[test]
    fn fixed_paths_route_to_themselves() {
        let router = Router::default();
        for fixed in router.routes.iter().filter(|r| !r.template.contains('{')) {
            assert!(
                matches!(router.find(&fixed.method, fixed.template), Matched::Route(r, _) if r.template == fixed.template)
            );
        }
    }

    #[test]
    fn every_template_is_unique() {
        let router = Router::default();
        let mut seen = std::collections::HashSet::new();
        for (method, template) in router.templates() {
            assert!(seen.insert((method.clone(), template)), "{method} {template} twice");
        }
    }

    #[test]
    fn only_writes_read_bodies_and_every_admin_route_is_operator_only() {
        for route in routes() {
            if route.method == Method::GET || route.method == Method::DELETE {
                assert_eq!(route.body, BodyUse::None, "{} {} reads a body", route.method, route.template);
            }
            if route.template.starts_with("/v1/apps") {
                assert_eq!(route.access, Access::Operator, "{} {}", route.method, route.template);
            }
        }
    }
}
