//! Routing: maps a method and path to a handler, authenticates the caller, and turns handler
//! errors into problem responses. Handlers translate HTTP to use-case calls and back; business
//! rules live in the domain crates.

mod apps;
mod idp;
mod openapi;
mod ops;
mod runtime;
mod signin;
mod vault;
mod wallet;
mod webhooks;

use crate::json::{problem_response, read_body, HttpResponse};
use crate::problem::ApiError;
use crate::state::AppState;
use bytes::Bytes;
use custody_identity::page::PageRequest;
use custody_identity::{ApiKeyRecord, AppId};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH};
use hyper::{HeaderMap, Method, Request, StatusCode};
use std::collections::HashMap;
use std::sync::Arc;

/// A request after routing: its parts, the body read in full, path parameters, and the query.
#[derive(Debug)]
pub struct Call {
    pub method: Method,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub params: Vec<String>,
    pub query: HashMap<String, String>,
}

impl Call {
    /// The `n`th path parameter.
    pub fn param(&self, n: usize) -> &str {
        self.params.get(n).map(String::as_str).unwrap_or_default()
    }

    /// The `n`th path parameter as an app id; a malformed id is a 404 like an unknown one.
    pub fn app_id(&self, n: usize) -> Result<AppId, ApiError> {
        AppId::parse(self.param(n)).map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "app_not_found", "app not found"))
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

/// One row of the routing table: method, path template, handler.
struct Route {
    method: Method,
    template: &'static str,
    handler: Handler,
}

fn routes() -> Vec<Route> {
    let r = |method: Method, template: &'static str, handler: Handler| Route { method, template, handler };
    vec![
        r(Method::GET, "/healthz", handler!(ops::healthz)),
        r(Method::GET, "/readyz", handler!(ops::readyz)),
        r(Method::GET, "/metrics", handler!(ops::metrics)),
        r(Method::GET, "/openapi.json", handler!(openapi::document)),
        r(Method::POST, "/v1/apps", handler!(apps::create_app)),
        r(Method::GET, "/v1/apps", handler!(apps::list_apps)),
        r(Method::GET, "/v1/apps/{app_id}", handler!(apps::get_app)),
        r(Method::DELETE, "/v1/apps/{app_id}", handler!(apps::delete_app)),
        r(Method::POST, "/v1/apps/{app_id}/api-keys", handler!(apps::create_api_key)),
        r(Method::GET, "/v1/apps/{app_id}/api-keys", handler!(apps::list_api_keys)),
        r(Method::DELETE, "/v1/apps/{app_id}/api-keys/{key_id}", handler!(apps::delete_api_key)),
        r(Method::GET, "/v1/apps/{app_id}/users", handler!(apps::list_users)),
        r(Method::GET, "/v1/apps/{app_id}/users/{user_id}", handler!(apps::get_user)),
        r(Method::POST, "/v1/apps/{app_id}/users/{user_id}/deprovision", handler!(apps::deprovision_user)),
        r(Method::GET, "/v1/apps/{app_id}/audit", handler!(apps::list_audit)),
        r(Method::POST, "/v1/apps/{app_id}/identity-provider/discover", handler!(idp::discover)),
        r(Method::POST, "/v1/apps/{app_id}/identity-provider", handler!(idp::create)),
        r(Method::GET, "/v1/apps/{app_id}/identity-provider", handler!(idp::get)),
        r(Method::PATCH, "/v1/apps/{app_id}/identity-provider", handler!(idp::patch)),
        r(Method::DELETE, "/v1/apps/{app_id}/identity-provider", handler!(idp::delete)),
        r(Method::GET, "/v1/apps/{app_id}/identity-provider/webhook", handler!(webhooks::get_settings)),
        r(Method::POST, "/v1/apps/{app_id}/identity-provider/webhook/enable", handler!(webhooks::enable)),
        r(Method::POST, "/v1/apps/{app_id}/identity-provider/webhook/rotate", handler!(webhooks::rotate)),
        r(Method::POST, "/v1/apps/{app_id}/identity-provider/webhook/disable", handler!(webhooks::disable)),
        r(Method::POST, "/v1/webhooks/{app_id}", handler!(webhooks::receive)),
        r(Method::PUT, "/v1/apps/{app_id}/identity-provider/oidc", handler!(signin::put_oidc)),
        r(Method::DELETE, "/v1/apps/{app_id}/identity-provider/oidc", handler!(signin::delete_oidc)),
        r(Method::POST, "/v1/auth/sessions", handler!(signin::create_session)),
        r(Method::GET, "/v1/auth/sessions/{session_id}", handler!(signin::get_session)),
        r(Method::GET, "/v1/auth/callback", handler!(signin::sdk_callback)),
        r(Method::GET, "/wallet", handler!(wallet::wallet_page)),
        r(Method::GET, "/wallet/sign-in", handler!(wallet::sign_in_page)),
        r(Method::GET, "/wallet/login", handler!(wallet::login)),
        r(Method::GET, "/wallet/auth/callback", handler!(wallet::callback)),
        r(Method::POST, "/wallet/grants/{grant_id}/revoke", handler!(wallet::revoke)),
        r(Method::POST, "/wallet/sign-out", handler!(wallet::sign_out)),
        r(Method::GET, "/v1/me", handler!(runtime::me)),
        r(Method::PUT, "/v1/apps/{app_id}/providers/{provider}", handler!(vault::put_provider)),
        r(Method::GET, "/v1/apps/{app_id}/providers/{provider}", handler!(vault::get_provider)),
        r(Method::DELETE, "/v1/apps/{app_id}/providers/{provider}", handler!(vault::delete_provider)),
        r(Method::GET, "/v1/apps/{app_id}/providers", handler!(vault::list_providers)),
        r(Method::PUT, "/v1/apps/{app_id}/policies/{provider}", handler!(vault::put_policy)),
        r(Method::GET, "/v1/apps/{app_id}/policies/{provider}", handler!(vault::get_policy)),
        r(Method::DELETE, "/v1/apps/{app_id}/policies/{provider}", handler!(vault::delete_policy)),
        r(Method::GET, "/v1/apps/{app_id}/policies", handler!(vault::list_policies)),
        r(Method::GET, "/v1/apps/{app_id}/grants", handler!(vault::list_app_grants)),
        r(Method::POST, "/v1/apps/{app_id}/grants", handler!(vault::import_grant)),
        r(Method::POST, "/v1/apps/{app_id}/grants/{grant_id}/revoke", handler!(vault::revoke_app_grant)),
        r(Method::POST, "/v1/connect/sessions", handler!(vault::create_connect_session)),
        r(Method::GET, "/v1/connect/start", handler!(vault::connect_start)),
        r(Method::GET, "/v1/connect/callback", handler!(vault::connect_callback)),
        r(Method::GET, "/v1/grants", handler!(vault::list_my_grants)),
        r(Method::DELETE, "/v1/grants/{grant_id}", handler!(vault::revoke_my_grant)),
        r(Method::POST, "/v1/token", handler!(vault::token)),
    ]
}

/// The route table, built once.
pub struct Router {
    routes: Vec<Route>,
    /// Templates without parameters, by method and path: one hash lookup answers the runtime
    /// endpoints (`POST /v1/token` above all) without walking the table.
    fixed: HashMap<(Method, &'static str), usize>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("routes", &self.routes.len()).finish()
    }
}

impl Default for Router {
    fn default() -> Self {
        let routes = routes();
        let fixed = routes
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.template.contains('{'))
            .map(|(i, r)| ((r.method.clone(), r.template), i))
            .collect();
        Self { routes, fixed }
    }
}

/// What routing found for a method and path.
enum Matched<'a> {
    Route(&'a Route, Vec<String>),
    /// The path exists, but not with this method.
    MethodNotAllowed(Vec<&'a str>),
    NotFound,
}

fn match_template(template: &str, path: &str) -> Option<Vec<String>> {
    let mut params = Vec::new();
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(params),
            (Some(ts), Some(ps)) if ts.starts_with('{') => {
                if ps.is_empty() {
                    return None;
                }
                params.push(percent_decode(ps)?);
            }
            (Some(ts), Some(ps)) if ts == ps => {}
            _ => return None,
        }
    }
}

fn percent_decode(s: &str) -> Option<String> {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes()).next().map(|(_, v)| v.into_owned())
}

impl Router {
    fn find(&self, method: &Method, path: &str) -> Matched<'_> {
        // Sound because no parameterised template matches a fixed one's path (tested below).
        if let Some(route) = self.fixed.get(&(method.clone(), path)).and_then(|&i| self.routes.get(i)) {
            return Matched::Route(route, Vec::new());
        }
        let mut allowed = Vec::new();
        for route in &self.routes {
            if let Some(params) = match_template(route.template, path) {
                if route.method == *method {
                    return Matched::Route(route, params);
                }
                allowed.push(route.method.as_str());
            }
        }
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

    /// Answers one request. Returns the response and the route template for metrics.
    pub async fn handle(&self, state: Arc<AppState>, request: Request<Incoming>) -> (HttpResponse, &'static str) {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        let (route, params) = match self.find(&parts.method, &path) {
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
                return (response, "unmatched");
            }
            Matched::NotFound => {
                return (
                    problem_response(&ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")),
                    "unmatched",
                )
            }
        };
        let body = match read_body(body, parts.headers.get(CONTENT_LENGTH)).await {
            Ok(body) => body,
            Err(e) => return (problem_response(&e), route.template),
        };
        let query = parts
            .uri
            .query()
            .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let call = Call { method: parts.method, headers: parts.headers, body, params, query };
        let response = match (route.handler)(state, call).await {
            Ok(response) => response,
            Err(e) => problem_response(&e),
        };
        (response, route.template)
    }
}

/// The bearer credential in `Authorization`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Requires the operator's admin token.
pub fn require_admin(state: &AppState, call: &Call) -> Result<(), ApiError> {
    match bearer(&call.headers) {
        Some(token) if state.is_admin_token(token) => Ok(()),
        _ => Err(ApiError::unauthorized()),
    }
}

/// Requires an app's API key; returns its record.
pub async fn require_app_key(state: &AppState, call: &Call) -> Result<ApiKeyRecord, ApiError> {
    let token = bearer(&call.headers).ok_or_else(ApiError::unauthorized)?;
    state.authenticate_api_key(token).await
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
        assert_eq!(match_template("/v1/apps/{app_id}", "/v1/apps/abc"), Some(vec!["abc".to_string()]));
        assert_eq!(match_template("/v1/apps/{app_id}", "/v1/apps/"), None);
        assert_eq!(match_template("/v1/apps/{app_id}", "/v1/apps/a/b"), None);
        assert_eq!(match_template("/v1/apps", "/v1/apps"), Some(vec![]));
        assert_eq!(match_template("/v1/apps/{a}/x/{b}", "/v1/apps/1/x/a%20b"), Some(vec!["1".into(), "a b".into()]));
    }

    #[test]
    fn fixed_paths_are_matched_by_no_parameterised_template() {
        let router = Router::default();
        for fixed in router.routes.iter().filter(|r| !r.template.contains('{')) {
            for other in router.routes.iter().filter(|r| r.template.contains('{')) {
                assert!(
                    match_template(other.template, fixed.template).is_none(),
                    "{} also matches {}",
                    other.template,
                    fixed.template
                );
            }
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
}
